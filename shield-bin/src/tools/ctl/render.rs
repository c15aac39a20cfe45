//! patronictl's tables, rendered from a [`ClusterView`]: pure functions, so the layout is
//! tested without a cluster.

use comfy_table::{CellAlignment, ColumnConstraint, Table, Width};
use serde_json::{Map, Value};
use shield_core::cluster::{ClusterView, HistoryLine, Initialize, Member};
use shield_core::MemberName;

/// prettytable's look: `+---+` rules, `|` separators, a `-` rule under the header. The first
/// preset draws a rule between every row (used when a cell spans lines, as patronictl does).
const RULES_BETWEEN_ROWS: &str = "||--+-++|-+++++++++";
const NO_RULES_BETWEEN_ROWS: &str = "||--+-++|    ++++++";

/// Output formats of `list`, `history` and `query`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A table, as patronictl prints it.
    Pretty,
    /// Tab-separated values with a header line.
    Tsv,
    /// A JSON array of objects, one per row, keyed by column name.
    Json,
    /// The same objects as YAML.
    #[value(alias = "yml")]
    Yaml,
    /// `list`'s table as a tree under the leader (as `topology` prints it).
    Topology,
}

/// One rendered cell: text, or a JSON number where patronictl's JSON has one.
#[derive(Clone, Debug, PartialEq)]
pub enum Cell {
    /// Nothing (blank in tables, left out of JSON/YAML).
    Empty,
    /// Text.
    Text(String),
    /// A number.
    Num(i64),
}

impl Cell {
    fn text(&self) -> String {
        match self {
            Cell::Empty => String::new(),
            Cell::Text(s) => s.clone(),
            Cell::Num(n) => n.to_string(),
        }
    }

    fn json(&self) -> Option<Value> {
        match self {
            Cell::Empty => None,
            Cell::Text(s) => Some(Value::from(s.as_str())),
            Cell::Num(n) => Some(Value::from(*n)),
        }
    }
}

/// A table: column names, rows, the right-aligned columns, and an optional title set into the
/// top border.
#[derive(Clone, Debug, Default)]
pub struct Grid {
    /// Column names.
    pub columns: Vec<String>,
    /// Rows, one cell per column.
    pub rows: Vec<Vec<Cell>>,
    /// Columns aligned to the right.
    pub right: Vec<String>,
    /// ` Cluster: name (sysid) `, set into the top border.
    pub title: Option<String>,
}

impl Grid {
    /// Renders in `format`; `hidden` columns are left out of the pretty table only (patronictl's
    /// `Cluster` column).
    pub fn render(&self, format: Format, hidden: &[&str]) -> String {
        match format {
            Format::Pretty | Format::Topology => self.pretty(hidden),
            Format::Tsv => {
                let mut out = self.columns.join("\t");
                for r in &self.rows {
                    out.push('\n');
                    out.push_str(&r.iter().map(|c| c.text().replace(['\t', '\n'], " ")).collect::<Vec<_>>().join("\t"));
                }
                out
            }
            Format::Json => serde_json::to_string(&self.objects()).unwrap_or_default(),
            Format::Yaml => serde_yaml_ng::to_string(&self.objects()).unwrap_or_default().trim_end().to_owned(),
        }
    }

    fn objects(&self) -> Value {
        Value::Array(
            self.rows
                .iter()
                .map(|r| {
                    let m: Map<String, Value> =
                        self.columns.iter().zip(r).filter_map(|(k, c)| c.json().map(|v| (k.clone(), v))).collect();
                    Value::Object(m)
                })
                .collect(),
        )
    }

    fn pretty(&self, hidden: &[&str]) -> String {
        let keep: Vec<usize> =
            (0..self.columns.len()).filter(|&i| !hidden.contains(&self.columns[i].as_str())).collect();
        let multi_line = self.rows.iter().any(|r| keep.iter().any(|&i| r[i].text().contains('\n')));
        let mut t = Table::new();
        t.load_preset(if multi_line { RULES_BETWEEN_ROWS } else { NO_RULES_BETWEEN_ROWS });
        t.set_header(keep.iter().map(|&i| self.columns[i].clone()));
        for r in &self.rows {
            t.add_row(keep.iter().map(|&i| r[i].text()));
        }
        for (pos, &i) in keep.iter().enumerate() {
            if self.right.contains(&self.columns[i]) {
                if let Some(c) = t.column_mut(pos) {
                    c.set_cell_alignment(CellAlignment::Right);
                }
            }
        }
        let mut text = t.to_string();
        if let Some(title) = &self.title {
            // Widen the last column until the title fits into the top border.
            let width = text.lines().next().map_or(0, |l| l.chars().count());
            let need = title.chars().count() + 2;
            if need > width && !keep.is_empty() {
                let last = keep.len() - 1;
                let current = t.column_max_content_widths().get(last).copied().unwrap_or(0) as usize;
                let grow = need - width;
                if let Some(c) = t.column_mut(last) {
                    let w = u16::try_from(current + grow + 2).unwrap_or(u16::MAX);
                    c.set_constraint(ColumnConstraint::LowerBoundary(Width::Fixed(w)));
                }
                text = t.to_string();
            }
            let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
            if let Some(top) = lines.first_mut() {
                let rest: String = top.chars().skip(1 + title.chars().count()).collect();
                *top = format!("+{title}{rest}");
            }
            text = lines.join("\n");
        }
        text
    }
}

/// The value shown after the cluster name: the system id, `uninitialized` or `initializing`.
pub fn initialize_label(v: &ClusterView) -> String {
    match &v.initialize {
        None => "uninitialized".to_owned(),
        Some(Initialize::Racing) => "initializing".to_owned(),
        Some(Initialize::SystemId(id)) => id.to_string(),
        Some(Initialize::Invalid(s)) => s.clone(),
        Some(_) => "unknown".to_owned(),
    }
}

/// `host:port` of a member's conn_url.
fn host_port(m: &Member) -> Option<(String, u16)> {
    m.data.conn_url.as_deref().and_then(shield_db_postgres::host_port)
}

/// patronictl's role names.
pub fn role_label(v: &ClusterView, m: &Member) -> &'static str {
    if v.is_leader(&m.name) {
        "Leader"
    } else if v.sync.as_ref().is_some_and(|s| s.sync_standby.contains(&m.name)) {
        "Sync Standby"
    } else {
        "Replica"
    }
}

fn state_label(v: &ClusterView, m: &Member) -> String {
    match &m.data.replication_state {
        Some(r) if !v.is_leader(&m.name) => r.clone(),
        _ => m.data.state.clone(),
    }
}

fn lag_cell(v: &ClusterView, m: &Member) -> Cell {
    if v.is_leader(&m.name) {
        return Cell::Empty;
    }
    match (v.optime(), m.data.xlog_location) {
        (Some(o), Some(x)) => {
            let mb = (o.bytes_after(x) as f64 / (1024.0 * 1024.0)).round() as i64;
            Cell::Num(mb)
        }
        _ => Cell::Text("unknown".to_owned()),
    }
}

fn tags_yaml(m: &Member) -> String {
    let tags = m.data.tags.to_json();
    if tags.as_object().is_none_or(Map::is_empty) {
        return String::new();
    }
    serde_yaml_ng::to_string(&tags).unwrap_or_default().trim_end().to_owned()
}

fn scheduled_restart_label(m: &Member) -> String {
    let Some(sr) = m.data.other.get("scheduled_restart") else { return String::new() };
    let at = sr.get("schedule").and_then(Value::as_str).unwrap_or_default();
    match sr.get("postgres_version").and_then(Value::as_str) {
        Some(pv) => format!("{at} if version < {pv}"),
        None => at.to_owned(),
    }
}

/// patronictl 4's position columns for a replica: (`Receive LSN`, `Receive Lag`, `Replay LSN`,
/// `Replay Lag`), lags in MB behind the leader's last published position, as `cluster_as_json`
/// computes them (a member that publishes only `xlog_location` shows it as received while
/// streaming, else as replayed).
fn position_cells(v: &ClusterView, m: &Member) -> [Cell; 4] {
    if v.is_leader(&m.name) {
        return [Cell::Empty, Cell::Empty, Cell::Empty, Cell::Empty];
    }
    let (mut receive, mut replay) = (m.data.receive_lsn, m.data.replay_lsn);
    if receive.is_none() && replay.is_none() {
        if m.data.replication_state.as_deref() == Some("streaming") {
            receive = m.data.xlog_location;
        } else {
            replay = m.data.xlog_location;
        }
    }
    let optime = v.optime().unwrap_or_default();
    let pair = |lsn: Option<shield_core::Lsn>| match lsn.filter(|l| l.0 > 0) {
        None => (Cell::Text("unknown".into()), Cell::Empty),
        Some(l) => {
            let mb = (optime.bytes_after(l) as f64 / (1024.0 * 1024.0)).round() as i64;
            (Cell::Text(l.to_string()), Cell::Num(mb))
        }
    };
    let ((a, b), (c, d)) = (pair(receive), pair(replay));
    [a, b, c, d]
}

/// The `list` table of one cluster (and `topology` when `topology` is set): in the seed's layout
/// (`Lag in MB`), or with `patronictl4`, patronictl 4.1's columns (`Receive LSN`, `Receive Lag`,
/// `Replay LSN`, `Replay Lag`), which `-f json|yaml|tsv` carry.
pub fn members_grid(cluster: &str, v: &ClusterView, extended: bool, topology: bool) -> Grid {
    members_grid_as(cluster, v, extended, topology, false)
}

fn members_grid_as(cluster: &str, v: &ClusterView, extended: bool, topology: bool, patronictl4: bool) -> Grid {
    let members: Vec<&Member> = ordered_members(v, topology);
    let addrs: Vec<Option<(String, u16)>> = members.iter().map(|m| host_port(m)).collect();
    let hosts: Vec<&str> = addrs.iter().flatten().map(|(h, _)| h.as_str()).collect();
    let repeated = hosts.iter().enumerate().any(|(i, h)| hosts[..i].contains(h));
    let show_port = repeated || addrs.iter().flatten().any(|(_, p)| *p != 5432);
    let pending: Vec<bool> = members.iter().map(|m| m.data.pending_restart).collect();
    let scheduled: Vec<String> = members.iter().map(|m| scheduled_restart_label(m)).collect();
    let tags: Vec<String> = members.iter().map(|m| tags_yaml(m)).collect();
    let with_pending = extended || pending.iter().any(|p| *p);
    let with_scheduled = extended || scheduled.iter().any(|s| !s.is_empty());
    let with_tags = extended || tags.iter().any(|t| !t.is_empty());
    let lag_columns: &[&str] =
        if patronictl4 { &["Receive LSN", "Receive Lag", "Replay LSN", "Replay Lag"] } else { &["Lag in MB"] };
    let mut columns: Vec<String> =
        ["Cluster", "Member", "Host", "Role", "State", "TL"].iter().chain(lag_columns).map(|s| s.to_string()).collect();
    if with_pending {
        columns.push("Pending restart".into());
    }
    if with_scheduled {
        columns.push("Scheduled restart".into());
    }
    if with_tags {
        columns.push("Tags".into());
    }
    let rows = members
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let name = if topology && !v.is_leader(&m.name) && v.leader_name().is_some() {
                format!("+ {}", m.name)
            } else {
                m.name.to_string()
            };
            let host = match &addrs[i] {
                Some((h, p)) if show_port => format!("{h}:{p}"),
                Some((h, _)) => h.clone(),
                None => String::new(),
            };
            let mut row = vec![
                Cell::Text(cluster.to_owned()),
                Cell::Text(name),
                Cell::Text(host),
                Cell::Text(role_label(v, m).to_owned()),
                Cell::Text(state_label(v, m)),
                m.data.timeline.map_or(Cell::Empty, |t| Cell::Num(i64::from(t.0))),
            ];
            if patronictl4 {
                row.extend(position_cells(v, m));
            } else {
                row.push(lag_cell(v, m));
            }
            if with_pending {
                row.push(if pending[i] { Cell::Text("*".into()) } else { Cell::Empty });
            }
            if with_scheduled {
                row.push(if scheduled[i].is_empty() { Cell::Empty } else { Cell::Text(scheduled[i].clone()) });
            }
            if with_tags {
                row.push(if tags[i].is_empty() { Cell::Empty } else { Cell::Text(tags[i].clone()) });
            }
            row
        })
        .collect();
    Grid {
        columns,
        rows,
        right: ["TL", "Lag in MB", "Receive LSN", "Receive Lag", "Replay LSN", "Replay Lag"].map(String::from).to_vec(),
        title: Some(format!(" Cluster: {cluster} ({}) ", initialize_label(v))),
    }
}

/// Members sorted by name; for `topology`, the leader first and the others under it.
fn ordered_members(v: &ClusterView, topology: bool) -> Vec<&Member> {
    let mut all: Vec<&Member> = v.members.values().collect();
    if topology {
        all.sort_by_key(|m| (!v.is_leader(&m.name), m.name.clone()));
    }
    all
}

/// The lines patronictl prints under the table: maintenance mode and a scheduled switchover.
pub fn footer(v: &ClusterView) -> Vec<String> {
    let mut out = Vec::new();
    if v.config.as_ref().is_some_and(|(c, _)| c.pause) {
        out.push(" Maintenance mode: on".to_owned());
    }
    if let Some(f) = &v.failover {
        if let Some((_, at)) = &f.scheduled_at {
            out.push(format!(" Switchover scheduled at: {at}"));
            if let Some(l) = &f.leader {
                out.push(format!("{:>25} {l}", "from:"));
            }
            if let Some(c) = &f.member {
                out.push(format!("{:>25} {c}", "to:"));
            }
        }
    }
    out
}

/// `list` output for one cluster in `format` (footer lines in pretty form only).
pub fn list(cluster: &str, v: &ClusterView, extended: bool, topology: bool, format: Format) -> String {
    let topology = topology || format == Format::Topology;
    let machine = matches!(format, Format::Json | Format::Yaml | Format::Tsv);
    let grid = members_grid_as(cluster, v, extended, topology, machine);
    let mut out = grid.render(format, &["Cluster"]);
    if matches!(format, Format::Pretty | Format::Topology) {
        for l in footer(v) {
            out.push('\n');
            out.push_str(&l);
        }
    }
    out
}

/// The `history` table.
pub fn history(lines: &[HistoryLine], format: Format) -> String {
    let rows = lines
        .iter()
        .map(|h| {
            vec![
                Cell::Num(i64::from(h.timeline.0)),
                Cell::Num(i64::try_from(h.lsn.0).unwrap_or(i64::MAX)),
                Cell::Text(h.reason.clone()),
                h.timestamp.clone().map_or(Cell::Empty, Cell::Text),
                h.new_leader.clone().map_or(Cell::Empty, Cell::Text),
            ]
        })
        .collect();
    let grid = Grid {
        columns: ["TL", "LSN", "Reason", "Timestamp", "New Leader"].iter().map(|s| s.to_string()).collect(),
        rows,
        right: vec!["TL".into(), "LSN".into()],
        title: None,
    };
    grid.render(format, &[])
}

/// The members a role filter selects (`leader`, `primary`, `replica`, `standby`, `any`, ...).
pub fn members_with_role<'a>(v: &'a ClusterView, role: &str) -> Result<Vec<&'a MemberName>, String> {
    let is_leader = |n: &MemberName| v.is_leader(n);
    let pick: Box<dyn Fn(&MemberName) -> bool> = match role {
        "leader" | "primary" | "master" | "standby-leader" => Box::new(is_leader),
        "replica" | "standby" => Box::new(move |n| !is_leader(n)),
        "any" => Box::new(|_| true),
        other => {
            return Err(format!("unknown role {other:?}: use leader, primary, standby-leader, replica, standby or any"))
        }
    };
    Ok(v.members.keys().filter(|n| pick(n)).collect())
}

#[cfg(test)]
#[path = "render_tests.rs"]
mod tests;

//! The `shieldctl` CLI. Not implemented yet: see README.md (issue 5).

fn main() {
    eprintln!("shieldctl: not implemented yet (see README.md, status)");
    std::process::exit(2);
}

//! The `shield` daemon. Not implemented yet: see README.md (issue 4).

fn main() {
    eprintln!("shield: the node daemon is not implemented yet (see README.md, status)");
    std::process::exit(2);
}

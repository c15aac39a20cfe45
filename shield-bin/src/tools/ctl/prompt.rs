//! patronictl's prompts (click's format: `Question [default]: `), answered on stdin.

use std::io::{BufRead, Write};

/// Asks `question` and returns the answer, or `default` for an empty line. A closed stdin is an
/// error that points at `--force`.
pub fn ask(question: &str, default: Option<&str>) -> Result<String, String> {
    // One space before the default, as in the seed's transcript (click would print two after a
    // question that ends in a space).
    let question = question.trim_end();
    let shown = match default {
        Some(d) => format!("{question} [{d}]: "),
        None => format!("{question}: "),
    };
    let mut out = std::io::stdout();
    let _ = out.write_all(shown.as_bytes());
    let _ = out.flush();
    let mut line = String::new();
    let n = std::io::stdin().lock().read_line(&mut line).map_err(|e| format!("cannot read an answer: {e}"))?;
    if n == 0 {
        let _ = writeln!(out);
        return Err(format!("no answer to {question:?} (stdin is closed); pass --force to run without prompts"));
    }
    let answer = line.trim();
    if answer.is_empty() {
        Ok(default.unwrap_or_default().to_owned())
    } else {
        Ok(answer.to_owned())
    }
}

/// Asks a yes/no question (default no); `Err` when the answer is no.
pub fn confirm(question: &str) -> Result<(), String> {
    let a = ask(&format!("{question} [y/N]"), None)?;
    if is_yes(&a) {
        Ok(())
    } else {
        Err("Aborted!".to_owned())
    }
}

fn is_yes(a: &str) -> bool {
    matches!(a.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

#[cfg(test)]
mod tests {
    #[test]
    fn yes_answers() {
        assert!(super::is_yes("y"));
        assert!(super::is_yes(" YES "));
        assert!(!super::is_yes(""));
        assert!(!super::is_yes("n"));
    }
}

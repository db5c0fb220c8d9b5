//! runc's log: `--log FILE` with `--log-format text|json`. containerd's
//! shim reads the last `error` line of this file as the failure's reason.
//!
//! Every message leaves through here, in runc's form: logrus lines
//! (`time=".." level=error msg=".."`, or JSON) to the log file, or to
//! stderr without one; with a log file an error also goes to stderr as its
//! bare message. System errors read as Go words them (`no such file or
//! directory`), which clients match on: Docker's CLI turns them into exit
//! codes 126 and 127.

use std::io::Write;
use std::path::Path;

/// Where and how to log.
pub struct Logger {
    file: Option<std::fs::File>,
    json: bool,
    debug: bool,
}

impl Logger {
    /// Opens the log file for appending (it is created if missing).
    pub fn new(path: Option<&Path>, format: &str, debug: bool) -> std::io::Result<Logger> {
        let file = match path {
            Some(p) => Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)?,
            ),
            None => None,
        };
        Ok(Logger {
            file,
            json: format == "json",
            debug,
        })
    }

    /// Logging to stderr only (when the log file cannot be opened).
    pub fn stderr(format: &str) -> Logger {
        Logger {
            file: None,
            json: format == "json",
            debug: false,
        }
    }

    /// Formats one line: `{"level":..,"msg":..,"time":..}` for json, or
    /// logrus's `time=".." level=.. msg=".."` for text.
    pub fn format(json: bool, level: &str, msg: &str, time: &str) -> String {
        if json {
            serde_json::json!({"level": level, "msg": msg, "time": time}).to_string()
        } else {
            format!(
                "time={} level={level} msg={}",
                serde_json::Value::from(time),
                serde_json::Value::from(msg)
            )
        }
    }

    /// One logrus line to the log file, or to stderr without one.
    fn write(&mut self, level: &str, msg: &str) {
        let t = rfc3339_seconds(std::time::SystemTime::now());
        let line = Self::format(self.json, level, &go_style(msg), &t);
        match &mut self.file {
            Some(f) => {
                let _ = writeln!(f, "{line}");
            }
            None => eprintln!("{line}"),
        }
    }

    /// An error: a logrus line to the log file (or stderr); with a log
    /// file, the bare message to stderr too, as runc does.
    pub fn error(&mut self, msg: &str) {
        self.write("error", msg);
        if self.file.is_some() {
            eprintln!("{}", go_style(msg));
        }
    }

    /// A warning, to the log file or stderr.
    pub fn warn(&mut self, msg: &str) {
        self.write("warning", msg);
    }

    /// Debug output, only with `--debug`.
    pub fn debug(&mut self, msg: &str) {
        if self.debug {
            self.write("debug", msg);
        }
    }
}

/// The log's timestamp: RFC 3339 in UTC to the second, as runc's logrus
/// writes it.
fn rfc3339_seconds(t: std::time::SystemTime) -> String {
    let full = crate::state::rfc3339(t);
    match full.split_once('.') {
        Some((seconds, _)) => format!("{seconds}Z"),
        None => full,
    }
}

/// Go's text for an errno: the C library's, with the first letter
/// lowercased unless the word is an acronym (Go's `mkerrors` rule), e.g.
/// `no such file or directory`, `permission denied`.
pub fn go_errno_text(code: i32) -> String {
    let text = rust_errno_text(code);
    let mut chars = text.chars();
    match (chars.next(), chars.next()) {
        (Some(first), Some(second))
            if first.is_ascii_uppercase() && second.is_ascii_lowercase() =>
        {
            let mut out = String::with_capacity(text.len());
            out.push(first.to_ascii_lowercase());
            out.push_str(&text[1..]);
            out
        }
        _ => text,
    }
}

/// The C library's text for an errno, as Rust shows it before its
/// ` (os error N)` suffix.
fn rust_errno_text(code: i32) -> String {
    let shown = std::io::Error::from_raw_os_error(code).to_string();
    match shown.strip_suffix(&format!(" (os error {code})")) {
        Some(text) => text.to_string(),
        None => shown,
    }
}

/// Rewrites every system error in `msg` from Rust's form (`No such file or
/// directory (os error 2)`) to Go's (`no such file or directory`). This is
/// the one place it happens: messages are built with `std::io::Error`'s
/// Display throughout and leave the runtime only through here.
pub fn go_style(msg: &str) -> String {
    const MARK: &str = " (os error ";
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    while let Some(at) = rest.find(MARK) {
        let after = &rest[at + MARK.len()..];
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        let code = after[..digits].parse::<i32>().ok();
        match (code, after[digits..].starts_with(')')) {
            (Some(code), true) => {
                let before = &rest[..at];
                let text = rust_errno_text(code);
                match before.strip_suffix(text.as_str()) {
                    Some(head) => {
                        out.push_str(head);
                        out.push_str(&go_errno_text(code));
                    }
                    None => out.push_str(before),
                }
                rest = &after[digits + 1..];
            }
            _ => {
                out.push_str(&rest[..at + MARK.len()]);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_line() {
        let l = Logger::format(true, "error", "a \"b\"", "T");
        let v: serde_json::Value = serde_json::from_str(&l).unwrap();
        assert_eq!(v["level"], "error");
        assert_eq!(v["msg"], "a \"b\"");
        assert_eq!(v["time"], "T");
    }

    #[test]
    fn system_errors_read_as_go_words_them() {
        let e = |code| std::io::Error::from_raw_os_error(code);
        assert_eq!(
            go_style(&format!("exec: \"/x\": /x: {}", e(libc::ENOENT))),
            "exec: \"/x\": /x: no such file or directory"
        );
        assert_eq!(
            go_style(&format!("a: {}; b: {}", e(libc::EACCES), e(libc::ENXIO))),
            "a: permission denied; b: no such device or address"
        );
        assert_eq!(go_errno_text(libc::EPERM), "operation not permitted");
        assert_eq!(go_errno_text(libc::EREMOTEIO), "remote I/O error");
        // Not a system error: untouched.
        assert_eq!(go_style("x (os error y) z"), "x (os error y) z");
        assert_eq!(go_style("plain"), "plain");
    }

    #[test]
    fn log_time_is_to_the_second() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_500);
        assert_eq!(rfc3339_seconds(t), "1970-01-01T00:00:01Z");
    }

    #[test]
    fn text_line() {
        assert_eq!(
            Logger::format(false, "error", "x y", "T"),
            "time=\"T\" level=error msg=\"x y\""
        );
    }
}

//! runc's log: `--log FILE` with `--log-format text|json`. containerd's
//! shim reads the last `error` line of this file as the failure's reason.

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

    fn write(&mut self, level: &str, msg: &str) {
        if let Some(f) = &mut self.file {
            let t = crate::state::rfc3339(std::time::SystemTime::now());
            let _ = writeln!(f, "{}", Self::format(self.json, level, msg, &t));
        }
    }

    /// An error: to the log file, and always to stderr.
    pub fn error(&mut self, msg: &str) {
        self.write("error", msg);
        eprintln!("skiff: {msg}");
    }

    /// A warning: to the log file, or stderr when there is none.
    pub fn warn(&mut self, msg: &str) {
        if self.file.is_some() {
            self.write("warning", msg);
        } else {
            eprintln!("skiff: warning: {msg}");
        }
    }

    /// Debug output, only with `--debug`.
    pub fn debug(&mut self, msg: &str) {
        if self.debug {
            if self.file.is_some() {
                self.write("debug", msg);
            } else {
                eprintln!("skiff: debug: {msg}");
            }
        }
    }
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
    fn text_line() {
        assert_eq!(
            Logger::format(false, "error", "x y", "T"),
            "time=\"T\" level=error msg=\"x y\""
        );
    }
}

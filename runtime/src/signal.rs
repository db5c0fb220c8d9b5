//! Signal names and numbers as `kill` accepts them: `KILL`, `SIGKILL`,
//! `kill`, or `9`.

/// The signal could not be parsed.
#[derive(Debug, thiserror::Error)]
#[error("invalid signal {0:?}")]
pub struct SignalError(pub String);

const NAMES: &[(&str, libc::c_int)] = &[
    ("ABRT", libc::SIGABRT),
    ("ALRM", libc::SIGALRM),
    ("BUS", libc::SIGBUS),
    ("CHLD", libc::SIGCHLD),
    ("CLD", libc::SIGCHLD),
    ("CONT", libc::SIGCONT),
    ("FPE", libc::SIGFPE),
    ("HUP", libc::SIGHUP),
    ("ILL", libc::SIGILL),
    ("INT", libc::SIGINT),
    ("IO", libc::SIGIO),
    ("IOT", libc::SIGIOT),
    ("KILL", libc::SIGKILL),
    ("PIPE", libc::SIGPIPE),
    ("POLL", libc::SIGPOLL),
    ("PROF", libc::SIGPROF),
    ("PWR", libc::SIGPWR),
    ("QUIT", libc::SIGQUIT),
    ("SEGV", libc::SIGSEGV),
    ("STKFLT", libc::SIGSTKFLT),
    ("STOP", libc::SIGSTOP),
    ("SYS", libc::SIGSYS),
    ("TERM", libc::SIGTERM),
    ("TRAP", libc::SIGTRAP),
    ("TSTP", libc::SIGTSTP),
    ("TTIN", libc::SIGTTIN),
    ("TTOU", libc::SIGTTOU),
    ("URG", libc::SIGURG),
    ("USR1", libc::SIGUSR1),
    ("USR2", libc::SIGUSR2),
    ("VTALRM", libc::SIGVTALRM),
    ("WINCH", libc::SIGWINCH),
    ("XCPU", libc::SIGXCPU),
    ("XFSZ", libc::SIGXFSZ),
];

/// Parses a signal name (with or without `SIG`, any case), `RTMIN+n`, or a
/// number.
pub fn parse(s: &str) -> Result<libc::c_int, SignalError> {
    let bad = || SignalError(s.to_string());
    if let Ok(n) = s.parse::<libc::c_int>() {
        return if (1..=libc::SIGRTMAX()).contains(&n) {
            Ok(n)
        } else {
            Err(bad())
        };
    }
    let up = s.to_ascii_uppercase();
    let name = up.strip_prefix("SIG").unwrap_or(&up);
    if let Some(&(_, n)) = NAMES.iter().find(|(k, _)| *k == name) {
        return Ok(n);
    }
    let rt = |base: libc::c_int, off: &str, sign: i32| -> Option<libc::c_int> {
        let off: i32 = if off.is_empty() { 0 } else { off.parse().ok()? };
        let n = base + sign * off;
        (libc::SIGRTMIN()..=libc::SIGRTMAX())
            .contains(&n)
            .then_some(n)
    };
    let r = if let Some(off) = name.strip_prefix("RTMIN") {
        rt(libc::SIGRTMIN(), off.trim_start_matches('+'), 1)
    } else if let Some(off) = name.strip_prefix("RTMAX") {
        rt(libc::SIGRTMAX(), off.trim_start_matches('-'), -1)
    } else {
        None
    };
    r.ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers() {
        assert_eq!(parse("KILL").unwrap(), 9);
        assert_eq!(parse("SIGKILL").unwrap(), 9);
        assert_eq!(parse("sigterm").unwrap(), 15);
        assert_eq!(parse("9").unwrap(), 9);
        assert_eq!(parse("RTMIN+1").unwrap(), libc::SIGRTMIN() + 1);
        assert_eq!(parse("SIGRTMAX").unwrap(), libc::SIGRTMAX());
        for bad in ["", "0", "-1", "99", "FOO", "RTMIN+100"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}

//! Times one StartTransientUnit round trip (connect, start a scope holding a
//! child, wait for systemd's job) with skiff's own D-Bus client over
//! systemd's private socket, and counts the process's threads afterwards:
//! the measurement behind the choice of D-Bus client (README,
//! dependencies). Needs root and systemd as pid 1.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use skiff::cgroups::dbus::{Arg, Bus, Value, PRIVATE_SOCKET};
use std::path::Path;
use std::time::Instant;

fn main() {
    let t0 = Instant::now();
    let mut bus = Bus::connect(Path::new(PRIVATE_SOCKET)).expect("connect");
    let t1 = Instant::now();
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .expect("spawn");
    let unit = format!("skiff-measure-{}.scope", std::process::id());
    let props = vec![
        (
            "Description".to_string(),
            Value::Str("skiff measure".into()),
        ),
        ("Slice".to_string(), Value::Str("system.slice".into())),
        ("Delegate".to_string(), Value::Bool(true)),
        ("PIDs".to_string(), Value::U32s(vec![child.id()])),
        ("MemoryMax".to_string(), Value::U64(100 << 20)),
    ];
    let args = [
        Arg::Str(&unit),
        Arg::Str("replace"),
        Arg::Props(&props),
        Arg::NoAux,
    ];
    let reply = bus.call("StartTransientUnit", &args).expect("start");
    let job = reply.first_str().expect("job");
    let result = bus.wait_job(&job).expect("job result");
    let t2 = Instant::now();
    let threads = std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(0);
    println!("job {result}");
    println!(
        "threads {threads} connect {:?} start+wait {:?}",
        t1 - t0,
        t2 - t1
    );
    let _ = bus.call("StopUnit", &[Arg::Str(&unit), Arg::Str("replace")]);
    let _ = child.kill();
    let _ = child.wait();
}

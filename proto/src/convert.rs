//! Conversions between the runtime's view (wait statuses, `state` JSON status strings, system
//! time) and the Task API's (exit codes, [`Status`], protobuf timestamps and `Any`).

use std::time::{SystemTime, UNIX_EPOCH};

use containerd_shim_protos::events::task as task_events;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::types::task::Status;

/// The exit status containerd reports for a raw `waitpid` status: the exit code, or 128 plus the
/// signal that killed the process (what a shell prints).
pub fn exit_status(wait_status: i32) -> u32 {
    if libc::WIFEXITED(wait_status) {
        libc::WEXITSTATUS(wait_status) as u32
    } else if libc::WIFSIGNALED(wait_status) {
        128 + libc::WTERMSIG(wait_status) as u32
    } else {
        // Stopped or continued is never an exit; report it as the unknown status containerd uses.
        255
    }
}

/// A protobuf timestamp for `time`.
pub fn timestamp(time: SystemTime) -> Timestamp {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let mut ts = Timestamp::new();
    ts.seconds = i64::try_from(since.as_secs()).unwrap_or(i64::MAX);
    ts.nanos = since.subsec_nanos() as i32;
    ts
}

/// The Task API status for the `status` field of a runtime's `state` output (runc's strings).
pub fn status_from_runtime(status: &str) -> Status {
    match status {
        "created" => Status::CREATED,
        "running" => Status::RUNNING,
        "stopped" => Status::STOPPED,
        "paused" => Status::PAUSED,
        "pausing" => Status::PAUSING,
        _ => Status::UNKNOWN,
    }
}

/// A message containerd knows by a fixed type name (what its `typeurl` registry expects in an
/// `Any`). The names are constants so that packing never initialises protobuf reflection, which
/// would parse whole descriptor sets into the long-lived shim's heap.
pub trait Named: Message {
    /// The full protobuf name, e.g. `containerd.events.TaskExit`.
    const TYPE_URL: &'static str;
}

macro_rules! named {
    ($($ty:ty => $name:literal),* $(,)?) => {
        $(impl Named for $ty { const TYPE_URL: &'static str = $name; })*
    };
}

named! {
    task_events::TaskCreate => "containerd.events.TaskCreate",
    task_events::TaskStart => "containerd.events.TaskStart",
    task_events::TaskDelete => "containerd.events.TaskDelete",
    task_events::TaskExit => "containerd.events.TaskExit",
    task_events::TaskOOM => "containerd.events.TaskOOM",
    task_events::TaskExecAdded => "containerd.events.TaskExecAdded",
    task_events::TaskExecStarted => "containerd.events.TaskExecStarted",
    task_events::TaskPaused => "containerd.events.TaskPaused",
    task_events::TaskResumed => "containerd.events.TaskResumed",
    containerd_shim_protos::cgroups::metrics::Metrics => "io.containerd.cgroups.v1.Metrics",
    containerd_shim_protos::cgroups_v2::metrics::Metrics => "io.containerd.cgroups.v2.Metrics",
    containerd_shim_protos::shim::oci::ProcessDetails => "containerd.runc.v1.ProcessDetails",
}

/// Pack `msg` into an `Any` under its containerd type name.
pub fn to_any<M: Named>(msg: &M) -> Any {
    let mut any = Any::new();
    any.type_url = M::TYPE_URL.to_string();
    // Encoding a message into a Vec cannot fail for the generated types (no required fields).
    any.value = msg.write_to_bytes().unwrap_or_default();
    any
}

/// The message name of an `Any`'s type URL (`type.googleapis.com/a.b.C` and `a.b.C` both give
/// `a.b.C`).
pub fn type_name(any: &Any) -> &str {
    any.type_url.rsplit('/').next().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_shim_protos::events::task::TaskExit;
    use containerd_shim_protos::protobuf::MessageFull;

    fn full_name<M: MessageFull>() -> String {
        M::descriptor().full_name().to_string()
    }

    #[test]
    fn fixed_names_match_the_descriptors() {
        use containerd_shim_protos::events::task::*;
        assert_eq!(TaskCreate::TYPE_URL, full_name::<TaskCreate>());
        assert_eq!(TaskStart::TYPE_URL, full_name::<TaskStart>());
        assert_eq!(TaskDelete::TYPE_URL, full_name::<TaskDelete>());
        assert_eq!(TaskExit::TYPE_URL, full_name::<TaskExit>());
        assert_eq!(TaskOOM::TYPE_URL, full_name::<TaskOOM>());
        assert_eq!(TaskExecAdded::TYPE_URL, full_name::<TaskExecAdded>());
        assert_eq!(TaskExecStarted::TYPE_URL, full_name::<TaskExecStarted>());
        assert_eq!(TaskPaused::TYPE_URL, full_name::<TaskPaused>());
        assert_eq!(TaskResumed::TYPE_URL, full_name::<TaskResumed>());
        use containerd_shim_protos::{cgroups, cgroups_v2, shim::oci};
        assert_eq!(
            cgroups::metrics::Metrics::TYPE_URL,
            full_name::<cgroups::metrics::Metrics>()
        );
        assert_eq!(
            cgroups_v2::metrics::Metrics::TYPE_URL,
            full_name::<cgroups_v2::metrics::Metrics>()
        );
        assert_eq!(
            oci::ProcessDetails::TYPE_URL,
            full_name::<oci::ProcessDetails>()
        );
    }

    #[test]
    fn exit_codes_and_signals() {
        assert_eq!(exit_status(0), 0);
        assert_eq!(exit_status(3 << 8), 3);
        assert_eq!(exit_status(9), 137);
        assert_eq!(exit_status(15), 143);
    }

    #[test]
    fn statuses() {
        assert_eq!(status_from_runtime("running"), Status::RUNNING);
        assert_eq!(status_from_runtime("paused"), Status::PAUSED);
        assert_eq!(status_from_runtime("weird"), Status::UNKNOWN);
    }

    #[test]
    fn any_carries_containerd_type_names() {
        let mut exit = TaskExit::new();
        exit.container_id = "c".into();
        let any = to_any(&exit);
        assert_eq!(any.type_url, "containerd.events.TaskExit");
        assert_eq!(type_name(&any), "containerd.events.TaskExit");
        let back = TaskExit::parse_from_bytes(&any.value).unwrap();
        assert_eq!(back.container_id, "c");
    }

    #[test]
    fn timestamps() {
        let ts = timestamp(UNIX_EPOCH + std::time::Duration::new(5, 7));
        assert_eq!((ts.seconds, ts.nanos), (5, 7));
    }
}

//! Kubernetes' path to a runtime: a private containerd with its CRI plugin, and a CRI client.
//!
//! [`CriNode::start`] plays the node: Debian's containerd (see [`crate::containerd`]) with the CRI
//! plugin on ([`CriNode::start_v2`]: containerd 2.4 with config version 3's CRI plugins, the
//! handler tables under `io.containerd.cri.v1.runtime`, the sandbox image pinned in
//! `io.containerd.cri.v1.images`), its own root, state and socket, started in a network namespace of its own so that
//! what CNI does on the "host" side (the `ptp` plugin's veth ends and routes, `ip_forward`) never
//! reaches the real host, and these runtime handlers:
//!
//! | handler | runtime_type | options |
//! | --- | --- | --- |
//! | `skiff` | `io.containerd.skiff.v2` | the table of `scripts/containerd-config.toml` (2.4: `scripts/containerd-config-v3.toml`), its `ConfigPath` pointed at a file naming the built `skiff` and a root in the instance dir |
//! | `runc` (default) | `io.containerd.runc.v2` | `/usr/sbin/runc`, a root in the instance dir |
//! | `runc-shim-skiff` | `io.containerd.runc.v2` | `BinaryName` = the built `skiff`: containerd's runc shim driving skiff |
//! | `skiff-broken` | `io.containerd.skiff.v2` | a `BinaryName` that does not exist: every sandbox fails to start |
//! | `skiff-systemd` | `io.containerd.skiff.v2` | the built `skiff` with `SystemdCgroup = true` (pods with a kubelet-style `.slice` parent) |
//!
//! The CNI config (`ptp` + `host-local`, its IPAM data in the instance dir) uses Debian's
//! `containernetworking-plugins` from `/usr/lib/cni`; `sandbox_image` is a pause image built here
//! from the busybox rootfs (`sleep` forever) and imported with the busybox image into `k8s.io`;
//! `restrict_oom_score_adj` is on because the machines lack `CAP_SYS_RESOURCE`.
//!
//! [`CriClient`] speaks CRI `runtime.v1` over the unix socket with tonic, one blocking call at a
//! time on a private current-thread tokio runtime (tests are plain `#[test]` functions); the
//! messages are in [`api`]. [`CriNode`] also builds what kubelet would send (pod and container
//! configs, the cgroupfs driver's `/kubepods/<qos>/pod<uid>` parent, created beforehand as kubelet
//! does) and answers the questions "is anything left?" asks: shims, mounts, cgroups, runtime state,
//! network interfaces, CNI cache and IPAM files.
//!
//! Dropping a node stops and removes every pod still known to CRI (so CNI tears its networks down),
//! then the containerd cleanup runs, then the pod cgroups (and the `/kubepods` levels, once empty)
//! are removed.

pub mod api;

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::Status;

use crate::containerd::{containerd2_bin, image_archive, Containerd, StartOptions, Version, IMAGE};
use crate::harness::{default_timeout, runtime_binary};
use crate::host::{all_cgroup_dirs, cgroup_mode, mount_points_under, CgroupMode};

/// The handler naming our shim.
pub const SKIFF_HANDLER: &str = "skiff";
/// The handler naming containerd's runc shim with runc (containerd's default).
pub const RUNC_HANDLER: &str = "runc";
/// containerd's runc shim driving skiff (`io.containerd.runc.v2` with `BinaryName` = skiff).
pub const RUNC_SHIM_SKIFF_HANDLER: &str = "runc-shim-skiff";
/// A skiff handler whose runtime binary does not exist.
pub const BROKEN_HANDLER: &str = "skiff-broken";
/// Our shim with `SystemdCgroup = true`: the systemd cgroup driver.
pub const SKIFF_SYSTEMD_HANDLER: &str = "skiff-systemd";
/// Our shim declared as containerd's runc shim type (`runtime_type = "io.containerd.runc.v2"`,
/// `runtime_path` naming containerd-shim-skiff-v2): containerd 2.x runs pods with user namespaces
/// only on a runtime of that type (with another it fails "failed to get runtime v2 options").
pub const SKIFF_USERNS_HANDLER: &str = "skiff-userns";
/// The sandbox image built and imported by [`CriNode::start`].
pub const PAUSE_IMAGE: &str = "skiff.invalid/pause:it";
/// The containerd namespace of CRI.
pub const K8S_NAMESPACE: &str = "k8s.io";
/// The CNI network's name.
pub const CNI_NETWORK: &str = "skiff-it";
/// The pods' addresses (inside the node's own network namespace: no route leaves it).
pub const POD_SUBNET: &str = "10.88.0.0/24";

/// The containerd config snippet the README documents (config version 2, containerd 1.x), used
/// here as it is.
const CONFIG_SNIPPET: &str = include_str!("../../scripts/containerd-config.toml");
/// Its config version 3 form (containerd 2.x), used as it is for containerd 2.4.
const CONFIG_SNIPPET_V3: &str = include_str!("../../scripts/containerd-config-v3.toml");
/// The options file path the snippet names (replaced by one in the instance dir).
const SNIPPET_OPTIONS_PATH: &str = "/etc/containerd/skiff-runtime.toml";

/// A failed CRI call: the gRPC status code and message, as kubelet sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CriError {
    code: tonic::Code,
    message: String,
}

impl CriError {
    /// The gRPC status code.
    pub fn code(&self) -> tonic::Code {
        self.code
    }

    /// The message, as containerd wrote it.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl std::fmt::Display for CriError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message)
    }
}

impl std::error::Error for CriError {}

impl From<Status> for CriError {
    fn from(s: Status) -> CriError {
        CriError {
            code: s.code(),
            message: s.message().to_string(),
        }
    }
}

/// A CRI call's result.
pub type CriResult<T> = std::result::Result<T, CriError>;

/// A blocking CRI client over a unix socket.
pub struct CriClient {
    rt: tokio::runtime::Runtime,
    channel: Channel,
    timeout: Duration,
}

impl std::fmt::Debug for CriClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CriClient")
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl CriClient {
    /// Connect to the gRPC server on `socket`.
    pub fn connect(socket: &Path) -> Result<CriClient> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("building a tokio runtime")?;
        let path = socket.to_path_buf();
        // The URI is required by the API and unused: the connector dials the socket.
        let endpoint = Endpoint::from_static("http://localhost").connect_timeout(default_timeout());
        let channel = rt
            .block_on(
                endpoint.connect_with_connector(tower::service_fn(move |_: Uri| {
                    let path = path.clone();
                    async move {
                        let stream = tokio::net::UnixStream::connect(path).await?;
                        Ok::<_, std::io::Error>(TokioIo::new(stream))
                    }
                })),
            )
            .with_context(|| format!("connecting to {}", socket.display()))?;
        Ok(CriClient {
            rt,
            channel,
            timeout: default_timeout(),
        })
    }

    /// One unary call of `/runtime.v1.<service>/<method>`, with the client's deadline.
    fn call<Req, Resp>(&self, service: &str, method: &str, req: Req) -> CriResult<Resp>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let error = |code, message: String| CriError { code, message };
        let path = PathAndQuery::try_from(format!("/runtime.v1.{service}/{method}"))
            .map_err(|e| error(tonic::Code::Internal, format!("bad method {method}: {e}")))?;
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        let timeout = self.timeout;
        let mut request = tonic::Request::new(req);
        request.set_timeout(timeout);
        let answer = self.rt.block_on(async move {
            let call = async {
                grpc.ready()
                    .await
                    .map_err(|e| error(tonic::Code::Unavailable, format!("CRI connection: {e}")))?;
                let codec = tonic::codec::ProstCodec::<Req, Resp>::default();
                grpc.unary(request, path, codec)
                    .await
                    .map(tonic::Response::into_inner)
                    .map_err(CriError::from)
            };
            tokio::time::timeout(timeout + Duration::from_secs(1), call).await
        });
        answer.unwrap_or_else(|_| {
            Err(error(
                tonic::Code::DeadlineExceeded,
                format!("{method} took more than {timeout:?}"),
            ))
        })
    }

    fn runtime<Req, Resp>(&self, method: &str, req: Req) -> CriResult<Resp>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        self.call("RuntimeService", method, req)
    }

    /// `Version`.
    pub fn version(&self) -> CriResult<api::VersionResponse> {
        self.runtime(
            "Version",
            api::VersionRequest {
                version: "v1".into(),
            },
        )
    }

    /// `Status`: the runtime's conditions (RuntimeReady, NetworkReady).
    pub fn status(&self) -> CriResult<api::StatusResponse> {
        self.runtime("Status", api::StatusRequest { verbose: false })
    }

    /// `RunPodSandbox`; returns the sandbox id.
    pub fn run_pod_sandbox(
        &self,
        config: &api::PodSandboxConfig,
        handler: &str,
    ) -> CriResult<String> {
        let resp: api::RunPodSandboxResponse = self.runtime(
            "RunPodSandbox",
            api::RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: handler.into(),
            },
        )?;
        Ok(resp.pod_sandbox_id)
    }

    /// `StopPodSandbox`.
    pub fn stop_pod_sandbox(&self, id: &str) -> CriResult<()> {
        let _: api::Empty = self.runtime(
            "StopPodSandbox",
            api::PodSandboxIdRequest {
                pod_sandbox_id: id.into(),
            },
        )?;
        Ok(())
    }

    /// `RemovePodSandbox`.
    pub fn remove_pod_sandbox(&self, id: &str) -> CriResult<()> {
        let _: api::Empty = self.runtime(
            "RemovePodSandbox",
            api::PodSandboxIdRequest {
                pod_sandbox_id: id.into(),
            },
        )?;
        Ok(())
    }

    /// `PodSandboxStatus` (verbose: `info["info"]` holds containerd's JSON with the pid).
    pub fn pod_sandbox_status(&self, id: &str) -> CriResult<api::PodSandboxStatusResponse> {
        self.runtime(
            "PodSandboxStatus",
            api::PodSandboxStatusRequest {
                pod_sandbox_id: id.into(),
                verbose: true,
            },
        )
    }

    /// `ListPodSandbox` without a filter.
    pub fn list_pod_sandbox(&self) -> CriResult<Vec<api::PodSandbox>> {
        let resp: api::ListPodSandboxResponse =
            self.runtime("ListPodSandbox", api::ListPodSandboxRequest {})?;
        Ok(resp.items)
    }

    /// `CreateContainer`; returns the container id.
    pub fn create_container(
        &self,
        pod: &str,
        config: &api::ContainerConfig,
        sandbox: &api::PodSandboxConfig,
    ) -> CriResult<String> {
        let resp: api::CreateContainerResponse = self.runtime(
            "CreateContainer",
            api::CreateContainerRequest {
                pod_sandbox_id: pod.into(),
                config: Some(config.clone()),
                sandbox_config: Some(sandbox.clone()),
            },
        )?;
        Ok(resp.container_id)
    }

    fn by_id(&self, method: &str, id: &str) -> CriResult<()> {
        let _: api::Empty = self.runtime(
            method,
            api::ContainerIdRequest {
                container_id: id.into(),
            },
        )?;
        Ok(())
    }

    /// `StartContainer`.
    pub fn start_container(&self, id: &str) -> CriResult<()> {
        self.by_id("StartContainer", id)
    }

    /// `StopContainer` with `timeout` seconds of grace.
    pub fn stop_container(&self, id: &str, timeout: i64) -> CriResult<()> {
        let _: api::Empty = self.runtime(
            "StopContainer",
            api::StopContainerRequest {
                container_id: id.into(),
                timeout,
            },
        )?;
        Ok(())
    }

    /// `RemoveContainer`.
    pub fn remove_container(&self, id: &str) -> CriResult<()> {
        self.by_id("RemoveContainer", id)
    }

    /// `ReopenContainerLog`.
    pub fn reopen_container_log(&self, id: &str) -> CriResult<()> {
        self.by_id("ReopenContainerLog", id)
    }

    /// `ContainerStatus`, verbose.
    pub fn container_status(&self, id: &str) -> CriResult<api::ContainerStatusResponse> {
        self.runtime(
            "ContainerStatus",
            api::ContainerStatusRequest {
                container_id: id.into(),
                verbose: true,
            },
        )
    }

    /// `ListContainers` without a filter.
    pub fn list_containers(&self) -> CriResult<Vec<api::Container>> {
        let resp: api::ListContainersResponse =
            self.runtime("ListContainers", api::ListContainersRequest {})?;
        Ok(resp.containers)
    }

    /// `ExecSync` with a timeout in seconds.
    pub fn exec_sync(
        &self,
        id: &str,
        cmd: &[&str],
        timeout: i64,
    ) -> CriResult<api::ExecSyncResponse> {
        self.runtime(
            "ExecSync",
            api::ExecSyncRequest {
                container_id: id.into(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                timeout,
            },
        )
    }

    /// `UpdateContainerResources`.
    pub fn update_container_resources(
        &self,
        id: &str,
        resources: &api::LinuxContainerResources,
    ) -> CriResult<()> {
        let _: api::Empty = self.runtime(
            "UpdateContainerResources",
            api::UpdateContainerResourcesRequest {
                container_id: id.into(),
                linux: Some(resources.clone()),
            },
        )?;
        Ok(())
    }

    /// `ContainerStats`.
    pub fn container_stats(&self, id: &str) -> CriResult<api::ContainerStats> {
        let resp: api::ContainerStatsResponse = self.runtime(
            "ContainerStats",
            api::ContainerIdRequest {
                container_id: id.into(),
            },
        )?;
        resp.stats.ok_or_else(|| CriError {
            code: tonic::Code::Internal,
            message: "ContainerStats returned no stats".into(),
        })
    }

    /// `ImageService/ImageStatus`: the image if CRI knows it.
    pub fn image_status(&self, image: &str) -> CriResult<Option<api::Image>> {
        let resp: api::ImageStatusResponse = self.call(
            "ImageService",
            "ImageStatus",
            api::ImageStatusRequest {
                image: Some(api::ImageSpec {
                    image: image.into(),
                }),
            },
        )?;
        Ok(resp.image)
    }
}

/// The runtime option files and the CNI config, relative to the instance dir.
fn node_files() -> Vec<(String, String)> {
    let cni = json!({
        "cniVersion": "1.0.0",
        "name": CNI_NETWORK,
        "plugins": [{
            "type": "ptp",
            "ipMasq": false,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": POD_SUBNET}]],
                "dataDir": "{dir}/cni-ipam",
            },
        }],
    });
    vec![
        (
            "cni/10-skiff-it.conflist".into(),
            serde_json::to_string_pretty(&cni).unwrap_or_default(),
        ),
        (
            "skiff-runtime.toml".into(),
            format!(
                "BinaryName = \"{}\"\nRoot = \"{{dir}}/skiff-root\"\n",
                runtime_binary().display()
            ),
        ),
        (
            "skiff-systemd.toml".into(),
            format!(
                "BinaryName = \"{}\"\nRoot = \"{{dir}}/skiff-systemd-root\"\nSystemdCgroup = true\n",
                runtime_binary().display()
            ),
        ),
        (
            "skiff-broken.toml".into(),
            "BinaryName = \"{dir}/no-such-runtime\"\nRoot = \"{dir}/broken-root\"\n".into(),
        ),
    ]
}

/// The documented snippet's tables (everything from its first table on), with its options file
/// replaced by the instance's.
fn snippet_tables(snippet: &str) -> String {
    snippet
        .lines()
        .skip_while(|l| !l.trim_start().starts_with('['))
        .map(|l| {
            format!(
                "{}\n",
                l.replace(SNIPPET_OPTIONS_PATH, "{dir}/skiff-runtime.toml")
            )
        })
        .collect()
}

/// The test handlers' tables (all but `skiff`, which the snippet brings) under `runtimes`, the
/// table of the CRI plugin's runtime handlers.
fn handler_tables(runtimes: &str) -> String {
    let skiff = runtime_binary().display().to_string();
    let handlers = [
        (
            RUNC_HANDLER,
            "io.containerd.runc.v2",
            "BinaryName = \"/usr/sbin/runc\"\nRoot = \"{dir}/runc-root\"".to_string(),
        ),
        (
            RUNC_SHIM_SKIFF_HANDLER,
            "io.containerd.runc.v2",
            format!("BinaryName = \"{skiff}\"\nRoot = \"{{dir}}/runc-shim-skiff-root\""),
        ),
        (
            BROKEN_HANDLER,
            "io.containerd.skiff.v2",
            "ConfigPath = \"{dir}/skiff-broken.toml\"".to_string(),
        ),
        (
            SKIFF_SYSTEMD_HANDLER,
            "io.containerd.skiff.v2",
            "ConfigPath = \"{dir}/skiff-systemd.toml\"".to_string(),
        ),
        (
            SKIFF_USERNS_HANDLER,
            "io.containerd.runc.v2",
            format!("BinaryName = \"{skiff}\"\nRoot = \"{{dir}}/skiff-userns-root\""),
        ),
    ];
    let shim = crate::containerd::shim_binary().display().to_string();
    handlers
        .iter()
        .map(|(name, runtime_type, options)| {
            let path = match *name {
                SKIFF_USERNS_HANDLER => format!("  runtime_path = \"{shim}\"\n"),
                _ => String::new(),
            };
            format!(
                "[{runtimes}.{name}]\n  runtime_type = \"{runtime_type}\"\n{path}\
                 [{runtimes}.{name}.options]\n  {}\n",
                options.replace('\n', "\n  ")
            )
        })
        .collect()
}

/// The CRI part of the node's containerd config: config version 2's single CRI plugin for
/// containerd 1.6, version 3's split `io.containerd.cri.v1.runtime` / `.images` plugins for 2.x.
fn cri_config(version: Version) -> String {
    match version {
        Version::Debian => {
            let cri = r#"plugins."io.containerd.grpc.v1.cri""#;
            format!(
                r#"[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [{cri}.cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{{dir}}/cni"
  [{cri}.containerd]
    default_runtime_name = "{RUNC_HANDLER}"
    snapshotter = "overlayfs"
{handlers}
{tables}"#,
                handlers = handler_tables(&format!("{cri}.containerd.runtimes")),
                tables = snippet_tables(CONFIG_SNIPPET),
            )
        }
        Version::V2_4 => {
            let runtime = r#"plugins."io.containerd.cri.v1.runtime""#;
            let images = r#"plugins."io.containerd.cri.v1.images""#;
            format!(
                r#"[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
[{images}]
  snapshotter = "overlayfs"
  [{images}.pinned_images]
    sandbox = "{PAUSE_IMAGE}"
[{runtime}]
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [{runtime}.cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = "{{dir}}/cni"
  [{runtime}.containerd]
    default_runtime_name = "{RUNC_HANDLER}"
{handlers}
{tables}"#,
                handlers = handler_tables(&format!("{runtime}.containerd.runtimes")),
                tables = snippet_tables(CONFIG_SNIPPET_V3),
            )
        }
    }
}

/// The pause image archive, built once per test process.
fn pause_image() -> Result<PathBuf> {
    static TAR: std::sync::Mutex<Option<PathBuf>> = std::sync::Mutex::new(None);
    let mut built = TAR
        .lock()
        .map_err(|_| anyhow!("pause image lock poisoned"))?;
    if let Some(p) = built.as_ref() {
        return Ok(p.clone());
    }
    let tar = image_archive(
        PAUSE_IMAGE,
        "pause-oci",
        json!({
            "Entrypoint": ["/bin/sleep"],
            "Cmd": ["2147483647"],
            "Env": ["PATH=/bin"],
        }),
    )?;
    *built = Some(tar.clone());
    Ok(tar)
}

/// A line of a CRI container log: `<RFC 3339 time> <stdout|stderr> <F|P> <content>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub time: String,
    pub stream: String,
    /// `P`: the line continues in the next entry.
    pub partial: bool,
    pub content: String,
}

/// Parse a CRI log file; an error names the first malformed line.
pub fn parse_cri_log(text: &str) -> Result<Vec<LogLine>> {
    text.lines()
        .enumerate()
        .map(|(n, line)| {
            let mut parts = line.splitn(4, ' ');
            let (time, stream, tag) = (
                parts.next().unwrap_or_default(),
                parts.next().unwrap_or_default(),
                parts.next().unwrap_or_default(),
            );
            let content = parts.next().unwrap_or_default();
            let bytes = time.as_bytes();
            let time_ok = bytes.len() >= 20
                && bytes[..4].iter().all(u8::is_ascii_digit)
                && bytes[4] == b'-'
                && bytes[10] == b'T'
                && (time.ends_with('Z') || bytes[19..].iter().any(|b| matches!(b, b'+' | b'-')));
            if !time_ok || !matches!(stream, "stdout" | "stderr") || !matches!(tag, "F" | "P") {
                bail!("line {}: not in the CRI log format: {line:?}", n + 1);
            }
            Ok(LogLine {
                time: time.into(),
                stream: stream.into(),
                partial: tag == "P",
                content: content.into(),
            })
        })
        .collect()
}

/// kubelet's resources for a container with a CPU request and limit in millicores and a memory
/// limit in bytes (requests = limits for memory), as its cgroupfs driver computes them.
pub fn kubelet_resources(
    cpu_request_milli: i64,
    cpu_limit_milli: i64,
    memory_limit: i64,
    oom_score_adj: i64,
) -> api::LinuxContainerResources {
    api::LinuxContainerResources {
        cpu_shares: (cpu_request_milli * 1024 / 1000).max(2),
        cpu_period: 100_000,
        cpu_quota: cpu_limit_milli * 100_000 / 1000,
        memory_limit_in_bytes: memory_limit,
        oom_score_adj,
        ..Default::default()
    }
}

/// The namespace options kubelet sends for an ordinary pod: the pod's network and IPC, a PID
/// namespace per container.
pub fn pod_namespaces() -> api::NamespaceOption {
    api::NamespaceOption {
        network: api::NamespaceMode::Pod as i32,
        pid: api::NamespaceMode::Container as i32,
        ipc: api::NamespaceMode::Pod as i32,
        target_id: String::new(),
        userns_options: None,
    }
}

/// What kubelet sends to create container `name` running `command` from `image`, logging to
/// `<name>/0.log` in the pod's log directory.
pub fn container_config(
    name: &str,
    image: &str,
    command: &[&str],
    resources: Option<api::LinuxContainerResources>,
) -> api::ContainerConfig {
    let labels: HashMap<String, String> = [("io.kubernetes.container.name", name)]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    api::ContainerConfig {
        metadata: Some(api::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(api::ImageSpec {
            image: image.into(),
        }),
        command: command.iter().map(|s| s.to_string()).collect(),
        envs: vec![api::KeyValue {
            key: "POD_CONTAINER".into(),
            value: name.into(),
        }],
        labels,
        log_path: format!("{name}/0.log"),
        linux: Some(api::LinuxContainerConfig {
            resources,
            security_context: Some(api::LinuxContainerSecurityContext {
                namespace_options: Some(pod_namespaces()),
                ..Default::default()
            }),
        }),
        ..Default::default()
    }
}

/// What a node leaves to clean after containerd's own cleanup: the pod cgroups and the
/// `/kubepods` levels above them (kubelet's part), removed deepest first when empty, and libcni's
/// cache entries of pods whose network CNI could not delete (a failed test), which live outside
/// the instance dir.
#[derive(Debug, Default)]
struct Leftovers {
    cgroups: Mutex<Vec<PathBuf>>,
    pods: Mutex<Vec<String>>,
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        for pod in self.pods.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            for entry in CriNode::cni_cache_entries(pod) {
                let _ = fs::remove_file(entry);
            }
        }
        let _guard = KUBEPODS.lock();
        for dir in self
            .cgroups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .rev()
        {
            // Fails while another node's pods are below: the last one out removes it.
            let _ = fs::remove_dir(dir);
        }
    }
}

/// Serializes making and removing the shared `/kubepods/<qos>` levels between the nodes of one
/// test process (tests run on several threads).
static KUBEPODS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Why CRI pods cannot run on this machine, if they cannot: the CNI plugins are missing, libcni's
/// cache dir (`/var/lib/cni`, not configurable in containerd 1.6) is not writable (the cgroup v2
/// VM shares `/` read-only), or the kernel cannot make veth pairs (the `ptp` plugin's links).
pub fn unsupported_reason() -> Option<String> {
    for plugin in ["ptp", "host-local", "loopback"] {
        let path = Path::new("/usr/lib/cni").join(plugin);
        if !path.is_file() {
            return Some(format!(
                "{} not found: install Debian's containernetworking-plugins (scripts/setup.sh)",
                path.display()
            ));
        }
    }
    let cache = Path::new("/var/lib/cni/results");
    let probe = cache.join(format!(".skiff-probe-{}", std::process::id()));
    if let Err(e) = fs::create_dir_all(cache).and_then(|()| fs::write(&probe, b"")) {
        return Some(format!(
            "libcni's cache {} is not writable: {e}",
            cache.display()
        ));
    }
    let _ = fs::remove_file(&probe);
    let veth = std::process::Command::new("unshare")
        .args(["--net", "--", "ip", "link", "add", "probe0", "type", "veth"])
        .args(["peer", "name", "probe1"])
        .output();
    match veth {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(format!(
            "cannot create a veth pair in a network namespace: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Some(format!(
            "running unshare and ip (util-linux, iproute2): {e}"
        )),
    }
}

/// A private containerd with CRI, and a client for it.
///
/// Fields drop in order: the client, containerd (its cleanup), then the leftovers.
pub struct CriNode {
    client: CriClient,
    containerd: Containerd,
    leftovers: Leftovers,
}

impl std::fmt::Debug for CriNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CriNode")
            .field("containerd", &self.containerd)
            .finish()
    }
}

impl CriNode {
    /// Start containerd 1.6 with CRI, import the images and wait until CRI reports itself ready.
    pub fn start() -> Result<CriNode> {
        CriNode::start_on(Version::Debian)
    }

    /// The same node on containerd 2.4 (config version 3); `None` (the caller skips, the reason
    /// is printed) when the containerd 2.4 tarball is absent.
    pub fn start_v2() -> Result<Option<CriNode>> {
        if containerd2_bin()?.is_none() {
            return Ok(None);
        }
        CriNode::start_on(Version::V2_4).map(Some)
    }

    fn start_on(version: Version) -> Result<CriNode> {
        CriNode::start_with_env(version, Vec::new())
    }

    /// A node on `version` whose containerd (and so every shim) has `env` in its environment;
    /// fails when that containerd is not available.
    pub fn start_with_env(version: Version, env: Vec<(String, String)>) -> Result<CriNode> {
        if version == Version::V2_4 && containerd2_bin()?.is_none() {
            bail!("containerd 2.4 is not available");
        }
        if let Some(why) = unsupported_reason() {
            bail!("{why}");
        }
        let skiff = runtime_binary();
        let containerd = Containerd::start_with(StartOptions {
            cri_config: Some(cri_config(version)),
            version,
            files: node_files(),
            namespace: Some(K8S_NAMESPACE.into()),
            runtime_roots: vec![
                (skiff.clone(), "{dir}/skiff-root".into()),
                (PathBuf::from("/usr/sbin/runc"), "{dir}/runc-root".into()),
                (skiff.clone(), "{dir}/runc-shim-skiff-root".into()),
                (skiff.clone(), "{dir}/broken-root".into()),
                (skiff.clone(), "{dir}/skiff-systemd-root".into()),
                (skiff, "{dir}/skiff-userns-root".into()),
            ],
            own_netns: true,
            env,
            ..StartOptions::default()
        })?;
        containerd.import_busybox()?;
        containerd.import_image(&pause_image()?)?;
        let client = CriClient::connect(&containerd.socket())?;
        let node = CriNode {
            client,
            containerd,
            leftovers: Leftovers::default(),
        };
        node.wait_ready()?;
        Ok(node)
    }

    fn wait_ready(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last = String::new();
        loop {
            match self.ready() {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => last = e.to_string(),
            }
            if Instant::now() > deadline {
                bail!(
                    "CRI not ready after 30 s ({last}):\n{}",
                    self.containerd().log_tail()
                );
            }
            sleep(Duration::from_millis(100));
        }
    }

    fn ready(&self) -> Result<bool> {
        let status = self.client.status()?;
        let conditions = status.status.map(|s| s.conditions).unwrap_or_default();
        let up = |t: &str| conditions.iter().any(|c| c.r#type == t && c.status);
        if !(up("RuntimeReady") && up("NetworkReady")) {
            return Ok(false);
        }
        for image in [IMAGE, PAUSE_IMAGE] {
            if self.client.image_status(image)?.is_none() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The CRI client.
    pub fn cri(&self) -> &CriClient {
        &self.client
    }

    /// The containerd under the node.
    pub fn containerd(&self) -> &Containerd {
        &self.containerd
    }

    /// The instance dir.
    pub fn dir(&self) -> &Path {
        self.containerd().dir()
    }

    /// The state root (`--root`) the runtime of `handler` uses.
    pub fn runtime_root(&self, handler: &str) -> PathBuf {
        let base = match handler {
            SKIFF_HANDLER => "skiff-root",
            RUNC_HANDLER => "runc-root",
            RUNC_SHIM_SKIFF_HANDLER => "runc-shim-skiff-root",
            SKIFF_SYSTEMD_HANDLER => "skiff-systemd-root",
            SKIFF_USERNS_HANDLER => "skiff-userns-root",
            _ => "broken-root",
        };
        self.dir().join(base).join(K8S_NAMESPACE)
    }

    /// Containers with state under the runtime root of `handler`.
    pub fn runtime_state_entries(&self, handler: &str) -> Vec<String> {
        fs::read_dir(self.runtime_root(handler))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The shims serving this node's containerd.
    pub fn shim_pids(&self) -> Vec<i32> {
        self.containerd().shim_pids()
    }

    /// Mount points under the instance dir (rootfs of containers, the pods' netns and shm).
    pub fn mounts(&self) -> Vec<PathBuf> {
        mount_points_under(self.dir()).unwrap_or_default()
    }

    /// The network interfaces in containerd's own network namespace (the "host" side of CNI).
    pub fn node_interfaces(&self) -> Result<Vec<String>> {
        let pid = self
            .containerd()
            .pid()
            .ok_or_else(|| anyhow!("containerd is not running"))?;
        let text = fs::read_to_string(format!("/proc/{pid}/net/dev"))?;
        Ok(text
            .lines()
            .skip(2)
            .filter_map(|l| l.split(':').next())
            .map(|s| s.trim().to_string())
            .collect())
    }

    /// Addresses host-local still has allocated in this node's network.
    pub fn ipam_allocations(&self) -> Vec<String> {
        fs::read_dir(self.dir().join("cni-ipam").join(CNI_NETWORK))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// libcni's cached results for sandbox `id` (`/var/lib/cni/results/<net>-<id>-<if>`).
    pub fn cni_cache_entries(id: &str) -> Vec<PathBuf> {
        fs::read_dir("/var/lib/cni/results")
            .map(|d| {
                d.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.to_string_lossy().contains(id))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The pod log directory kubelet would use for pod `name`/`uid` in namespace `default`.
    pub fn pod_log_dir(&self, name: &str, uid: &str) -> PathBuf {
        self.dir()
            .join("pods")
            .join(format!("default_{name}_{uid}"))
    }

    /// What kubelet sends for pod `name` (namespace `default`) whose cgroup is `cgroup_parent`.
    pub fn pod_config(&self, name: &str, uid: &str, cgroup_parent: &str) -> api::PodSandboxConfig {
        let pairs = |v: &[(&str, &str)]| -> HashMap<String, String> {
            v.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        api::PodSandboxConfig {
            metadata: Some(api::PodSandboxMetadata {
                name: name.into(),
                uid: uid.into(),
                namespace: "default".into(),
                attempt: 0,
            }),
            hostname: name.into(),
            log_directory: self.pod_log_dir(name, uid).display().to_string(),
            dns_config: Some(api::DnsConfig {
                servers: vec!["10.96.0.10".into()],
                searches: vec!["default.svc.cluster.local".into()],
                options: vec!["ndots:5".into()],
            }),
            labels: pairs(&[
                ("io.kubernetes.pod.name", name),
                ("io.kubernetes.pod.namespace", "default"),
                ("io.kubernetes.pod.uid", uid),
            ]),
            annotations: pairs(&[("kubernetes.io/config.source", "api")]),
            linux: Some(api::LinuxPodSandboxConfig {
                cgroup_parent: cgroup_parent.into(),
                security_context: Some(api::LinuxSandboxSecurityContext {
                    namespace_options: Some(pod_namespaces()),
                    ..Default::default()
                }),
                sysctls: HashMap::new(),
            }),
        }
    }

    /// Create the pod cgroup `/kubepods/<qos>/pod<uid>` as kubelet's cgroupfs driver does before
    /// RunPodSandbox: in every hierarchy, cpusets filled in from the parent (v1), controllers
    /// enabled for the children (v2), and the pod's CPU weight set from `cpu_shares`. Returns the
    /// cgroup path (the pod's `cgroup_parent`).
    pub fn pod_cgroup(&self, qos: &str, uid: &str, cpu_shares: u64) -> Result<String> {
        let pod = format!("/kubepods/{qos}/pod{uid}");
        let v2 = matches!(cgroup_mode()?, CgroupMode::V2 { .. });
        let _guard = KUBEPODS
            .lock()
            .map_err(|_| anyhow!("kubepods lock poisoned"))?;
        for level in [
            "/kubepods".to_string(),
            format!("/kubepods/{qos}"),
            pod.clone(),
        ] {
            for dir in all_cgroup_dirs(&level)? {
                // Every level is tried on drop, whoever made it: rmdir takes only empty ones.
                self.leftovers
                    .cgroups
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(dir.clone());
                if dir.is_dir() {
                    continue;
                }
                fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
                prepare_cgroup(&dir, v2)?;
            }
        }
        for dir in all_cgroup_dirs(&pod)? {
            let (file, value) = if v2 {
                (
                    "cpu.weight",
                    1 + (cpu_shares.saturating_sub(2) * 9999) / 262_142,
                )
            } else {
                ("cpu.shares", cpu_shares)
            };
            if dir.join(file).exists() {
                fs::write(dir.join(file), value.to_string())
                    .with_context(|| format!("writing {}/{file}", dir.display()))?;
            }
        }
        Ok(pod)
    }

    /// Directories below the cgroup `cgroup` in any hierarchy (the leaves runtimes create).
    pub fn cgroup_children(&self, cgroup: &str) -> Vec<PathBuf> {
        all_cgroup_dirs(cgroup)
            .unwrap_or_default()
            .into_iter()
            .flat_map(|d| fs::read_dir(d).into_iter().flatten().flatten())
            .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
            .map(|e| e.path())
            .collect()
    }

    /// The pid in containerd's verbose status `info` (a sandbox's or a container's).
    pub fn info_pid(info: &HashMap<String, String>) -> Result<i32> {
        let v: Value = serde_json::from_str(info.get("info").map(String::as_str).unwrap_or("{}"))?;
        v["pid"]
            .as_i64()
            .filter(|p| *p > 0)
            .map(|p| p as i32)
            .ok_or_else(|| anyhow!("no pid in status info: {v}"))
    }

    /// The OCI spec CRI generated for container (or sandbox) `id`, from the verbose status.
    pub fn info_spec(info: &HashMap<String, String>) -> Result<Value> {
        let v: Value = serde_json::from_str(info.get("info").map(String::as_str).unwrap_or("{}"))?;
        Ok(v["runtimeSpec"].clone())
    }

    /// Wait until container `id` has exited; returns its status.
    pub fn wait_exited(&self, id: &str, timeout: Duration) -> Result<api::ContainerStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self
                .client
                .container_status(id)?
                .status
                .ok_or_else(|| anyhow!("no status for {id}"))?;
            if status.state() == api::ContainerState::ContainerExited {
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!(
                    "container {id} still {:?} after {timeout:?}; containerd log:\n{}",
                    status.state(),
                    self.containerd.log_tail()
                );
            }
            sleep(Duration::from_millis(50));
        }
    }

    /// Wait until the file at `path` holds a line whose content contains `needle`; returns the
    /// parsed log.
    pub fn wait_for_log(path: &Path, needle: &str, timeout: Duration) -> Result<Vec<LogLine>> {
        let deadline = Instant::now() + timeout;
        loop {
            let text = fs::read_to_string(path).unwrap_or_default();
            let lines = parse_cri_log(&text)?;
            if lines.iter().any(|l| l.content.contains(needle)) {
                return Ok(lines);
            }
            if Instant::now() > deadline {
                bail!("{} has no line with {needle:?}:\n{text}", path.display());
            }
            sleep(Duration::from_millis(50));
        }
    }

    /// Stop and remove every pod CRI still knows (best effort, for cleanup); their ids are kept
    /// so that CNI cache entries left by a failed teardown are removed on drop.
    pub fn remove_all_pods(&self) {
        if let Ok(pods) = self.client.list_pod_sandbox() {
            for pod in pods {
                let _ = self.client.stop_pod_sandbox(&pod.id);
                let _ = self.client.remove_pod_sandbox(&pod.id);
                self.leftovers
                    .pods
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(pod.id);
            }
        }
    }
}

/// Make a new cgroup directory usable for children, as libcontainer's cgroupfs manager does.
fn prepare_cgroup(dir: &Path, v2: bool) -> Result<()> {
    if v2 {
        let controllers = fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
        for c in controllers.split_whitespace() {
            // Each on its own: one the kernel refuses must not stop the others.
            let _ = fs::write(dir.join("cgroup.subtree_control"), format!("+{c}"));
        }
        return Ok(());
    }
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let own = dir.join(file);
        if !own.exists() || !fs::read_to_string(&own)?.trim().is_empty() {
            continue;
        }
        if let Some(parent) = dir.parent() {
            let value = fs::read_to_string(parent.join(file))?;
            fs::write(&own, value.trim()).with_context(|| format!("writing {}", own.display()))?;
        }
    }
    Ok(())
}

impl Drop for CriNode {
    fn drop(&mut self) {
        // CRI first, so that CNI deletes its networks (the cache and IPAM files) and the runtimes
        // their cgroups; then the fields: containerd's own cleanup, the pod cgroups.
        if self.containerd.pid().is_some() {
            self.remove_all_pods();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cri_log_lines() {
        let text = "2026-11-24T16:35:09.503841411Z stdout F hello world\n\
                    2026-11-24T16:35:09.6+02:00 stderr P part\n";
        let lines = parse_cri_log(text).unwrap();
        assert_eq!(lines[0].stream, "stdout");
        assert_eq!(lines[0].content, "hello world");
        assert!(!lines[0].partial);
        assert_eq!(lines[1].stream, "stderr");
        assert!(lines[1].partial);
        for bad in [
            "hello",
            "2026-11-24T16:35:09Z stdin F x",
            "2026-11-24 16:35:09Z stdout F x",
        ] {
            assert!(parse_cri_log(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn kubelet_resources_for_requests_and_limits() {
        let r = kubelet_resources(250, 500, 64 << 20, 900);
        assert_eq!(
            (r.cpu_shares, r.cpu_quota, r.cpu_period),
            (256, 50_000, 100_000)
        );
        assert_eq!(kubelet_resources(1, 0, 0, 0).cpu_shares, 2);
    }

    #[test]
    fn the_documented_snippet_is_in_the_config() {
        let cfg = cri_config(Version::V2_4);
        assert!(cfg.contains(
            "[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.skiff.options]"
        ));
        assert!(cfg.contains("ConfigPath = '{dir}/skiff-runtime.toml'"));
        assert!(!cfg.contains(SNIPPET_OPTIONS_PATH));
        assert!(!cfg.contains("version = 3"));
        let cfg = cri_config(Version::Debian);
        assert!(cfg.contains("[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.skiff]"));
        assert!(cfg.contains("runtime_type = \"io.containerd.skiff.v2\""));
        assert!(cfg.contains("ConfigPath = \"{dir}/skiff-runtime.toml\""));
        assert!(!cfg.contains(SNIPPET_OPTIONS_PATH));
        assert!(!cfg.contains("version = 2"));
    }
}

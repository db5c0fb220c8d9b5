//! The Task API server: ttrpc on every containerd connection, served by one thread with epoll.
//!
//! containerd opens a connection per container (and more for its own calls), and ttrpc-rust's
//! server gives each one a handler thread, a reader, a writer and a worker pool: five threads per
//! container once containerd's `Wait` holds a worker. Here the main thread serves them all:
//!
//! - Requests are handled in arrival order by the handlers generated for the Task service
//!   ([`skiff_proto::service::task_methods`], both service names). The quick ones (`State`,
//!   `Wait`, `Pids`, ...) run on the serving thread. Those that run the runtime or wait for a
//!   child ([`Gate::offload`]) run on a worker thread each, at most [`MAX_WORKERS`] at once (the
//!   rest queue), so a runtime call that hangs never stops the server; a worker hands its answer
//!   back through a channel and the [`Waker`].
//! - A call that would block until something happens (`Wait` for a running process) is not
//!   run: the [`Gate`] says so, and the request is parked. Whoever changes what a parked call
//!   waits for (an exit, a delete) calls [`Waker::wake`], and the server asks the gate again for
//!   every parked request.
//! - Every socket is non-blocking and edge-triggered. A connection keeps the bytes of a frame not
//!   yet complete and the responses the socket did not take yet; both buffers are freed when
//!   empty, so an idle connection costs a socket and a few words. Both are bounded: a frame over
//!   the size limit is skipped, and a connection whose peer does not read its answers is not
//!   read from until they are written ([`MAX_OUTPUT`]); it may park at most [`MAX_PARKED`] calls.
//! - As ttrpc-go: an unknown service or method is `Unimplemented`; an over-long frame is
//!   `ResourceExhausted` for its stream and the connection goes on; a stream id must be odd and
//!   a request's larger than the last; a data frame (no Task call streams) is refused on its
//!   stream; frames of unknown types are ignored.
//! - When `accept` fails for want of descriptors (`EMFILE`), the listener is left alone for a
//!   moment ([`ACCEPT_PAUSE`]) while the open connections are served on.
//! - After `Shutdown` (the service signals `stop`), what is queued is written and
//!   [`Server::run`] returns.
//!
//! The wire format is in [`crate::wire`].

use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use skiff_proto::protobuf::Message;
use skiff_proto::ttrpc::{
    self, get_status, Code, ConnectionContext, MessageHeader, MethodHandler, Request, Response,
    TtrpcContext,
};

use crate::wire::{put_frame, Frames, Header, WireError, TYPE_DATA, TYPE_REQUEST, TYPE_RESPONSE};

const LISTENER: u64 = 0;
const WAKER: u64 = 1;
/// Bytes read from a socket at a time.
const READ_CHUNK: usize = 8 * 1024;
/// Offloaded calls running at once; more wait in a queue.
const MAX_WORKERS: usize = 32;
/// Answers queued for a connection above which it is not read from until they are written.
pub const MAX_OUTPUT: usize = 1 << 20;
/// Parked calls (`Wait`s) one connection may have.
pub const MAX_PARKED: usize = 1024;
/// How long calls in flight may take to finish once the server stops.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How long the listener rests after `accept` ran out of descriptors.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// The handlers, by `/service/method` path.
pub type Methods = HashMap<String, Box<dyn MethodHandler + Send + Sync>>;
type Handler = Arc<dyn MethodHandler + Send + Sync>;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("setting up the server's {what}: {errno}")]
    Setup { what: &'static str, errno: Errno },
    #[error("the listening socket: {0}")]
    Listener(std::io::Error),
}

fn setup(what: &'static str) -> impl FnOnce(Errno) -> ServerError {
    move |errno| ServerError::Setup { what, errno }
}

/// Decides whether a request can be answered now without blocking.
pub trait Gate: Send + Sync {
    /// Whether the request for `path` (`/service/method`) with `payload` can run now; `false`
    /// parks it until the next [`Waker::wake`].
    fn ready(&self, path: &str, payload: &[u8]) -> bool;

    /// Whether the call for `path` may take long (it runs a command, or waits for a lock such a
    /// call holds) and so runs on a worker thread.
    fn offload(&self, path: &str) -> bool;
}

/// Wakes the server to look at its parked requests again.
#[derive(Debug)]
pub struct Waker(EventFd);

impl Waker {
    pub fn new() -> Result<Waker, ServerError> {
        EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
            .map(Waker)
            .map_err(setup("eventfd"))
    }

    /// Something a parked request may wait for happened.
    pub fn wake(&self) {
        let _ = self.0.write(1);
    }
}

struct Conn {
    stream: UnixStream,
    frames: Frames,
    /// Responses not written yet; `sent` bytes of them are.
    out: Vec<u8>,
    sent: usize,
    /// The peer closed its side (or the socket failed).
    eof: bool,
    /// The last request's stream id: the next must be larger.
    last_stream: u32,
}

struct Parked {
    conn: u64,
    stream_id: u32,
    path: String,
    req: Request,
}

/// An offloaded call waiting for a worker.
struct Job {
    conn: u64,
    fd: i32,
    stream_id: u32,
    handler: Handler,
    req: Request,
}

/// A worker's answer: the frames for connection `conn`.
struct Done {
    conn: u64,
    frames: Vec<u8>,
}

/// The server; [`Server::run`] on the thread that serves.
pub struct Server {
    epoll: Epoll,
    listener: UnixListener,
    waker: Arc<Waker>,
    gate: Arc<dyn Gate>,
    methods: HashMap<String, Handler>,
    conns: HashMap<u64, Conn>,
    next_conn: u64,
    parked: Vec<Parked>,
    stop: Receiver<()>,
    conn_ctx: Arc<ConnectionContext>,
    /// Workers running, calls waiting for one, and their answers.
    workers: usize,
    jobs: VecDeque<Job>,
    done_tx: Sender<Done>,
    done_rx: Receiver<Done>,
    /// Set while the listener rests after `EMFILE`: when to listen again.
    accept_paused: Option<std::time::Instant>,
}

fn error_response(code: Code, message: String) -> Response {
    ttrpc::Error::RpcStatus(get_status(code, message)).into()
}

/// Run one call; its response frames.
fn run_job(job: Job, conn_ctx: &Arc<ConnectionContext>) -> Vec<u8> {
    let (tx, rx) = channel();
    let ctx = TtrpcContext {
        fd: job.fd,
        cancel_rx: crossbeam_channel::never(),
        mh: MessageHeader::new_request(job.stream_id, 0),
        res_tx: tx,
        metadata: ttrpc::context::from_pb(&job.req.metadata),
        timeout_nano: job.req.timeout_nano,
        conn_ctx: conn_ctx.clone(),
    };
    let mut out = Vec::new();
    if let Err(e) = job.handler.handler(ctx, job.req) {
        // The request did not decode, or the response did not encode.
        let res: Response = e.into();
        match res.write_to_bytes() {
            Ok(buf) => put_frame(&mut out, job.stream_id, TYPE_RESPONSE, &buf),
            Err(e) => log_line!("skiff-shim: encoding a response: {e}"),
        }
        return out;
    }
    for (mh, buf) in rx.try_iter() {
        put_frame(&mut out, mh.stream_id, mh.type_, &buf);
    }
    out
}

impl Server {
    /// A server on `listener` (already bound and listening) that returns from [`Server::run`]
    /// when `stop` receives.
    pub fn new(
        listener: UnixListener,
        methods: Methods,
        gate: Arc<dyn Gate>,
        waker: Arc<Waker>,
        stop: Receiver<()>,
    ) -> Result<Server, ServerError> {
        listener
            .set_nonblocking(true)
            .map_err(ServerError::Listener)?;
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(setup("epoll"))?;
        // Level-triggered: a connection left in the backlog (accept failed) is seen again.
        epoll
            .add(
                listener.as_fd(),
                EpollEvent::new(EpollFlags::EPOLLIN, LISTENER),
            )
            .map_err(setup("listener registration"))?;
        epoll
            .add(
                waker.0.as_fd(),
                EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLET, WAKER),
            )
            .map_err(setup("eventfd registration"))?;
        let (done_tx, done_rx) = channel();
        Ok(Server {
            epoll,
            listener,
            waker,
            gate,
            methods: methods
                .into_iter()
                .map(|(path, h)| (path, Handler::from(h)))
                .collect(),
            conns: HashMap::new(),
            next_conn: WAKER + 1,
            parked: Vec::new(),
            stop,
            conn_ctx: Arc::new(ConnectionContext::default()),
            workers: 0,
            jobs: VecDeque::new(),
            done_tx,
            done_rx,
            accept_paused: None,
        })
    }

    /// Serve until `stop` receives.
    pub fn run(mut self) {
        let mut events = [EpollEvent::empty(); 32];
        loop {
            let timeout = match self.accept_paused {
                Some(_) => EpollTimeout::from(ACCEPT_PAUSE.as_millis() as u16),
                None => EpollTimeout::NONE,
            };
            let n = match self.epoll.wait(&mut events, timeout) {
                Ok(n) => n,
                Err(Errno::EINTR) => 0,
                Err(e) => {
                    log_line!("skiff-shim: epoll_wait: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                    0
                }
            };
            self.resume_accept();
            for ev in &events[..n] {
                match ev.data() {
                    LISTENER => self.accept(),
                    WAKER => {
                        let _ = self.waker.0.read();
                        self.collect_done();
                        self.retry_parked();
                    }
                    id => self.serve(id),
                }
            }
            if self.stop.try_recv().is_ok() {
                self.finish_workers();
                let ids: Vec<u64> = self.conns.keys().copied().collect();
                for id in ids {
                    self.flush(id);
                }
                return;
            }
        }
    }

    fn accept(&mut self) {
        loop {
            let stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and the like: the connection waits in the backlog. Stop watching
                    // the listener for a moment (level-triggered, it would spin) and serve on.
                    log_line!("skiff-shim: accept: {e}");
                    self.pause_accept();
                    return;
                }
            };
            if let Err(e) = stream.set_nonblocking(true) {
                log_line!("skiff-shim: accepted connection: {e}");
                continue;
            }
            let id = self.next_conn;
            self.next_conn += 1;
            let flags = EpollFlags::EPOLLIN
                | EpollFlags::EPOLLOUT
                | EpollFlags::EPOLLRDHUP
                | EpollFlags::EPOLLET;
            if let Err(e) = self.epoll.add(stream.as_fd(), EpollEvent::new(flags, id)) {
                log_line!("skiff-shim: registering a connection: {e}");
                continue;
            }
            self.conns.insert(
                id,
                Conn {
                    stream,
                    frames: Frames::default(),
                    out: Vec::new(),
                    sent: 0,
                    eof: false,
                    last_stream: 0,
                },
            );
        }
    }

    fn pause_accept(&mut self) {
        if self.epoll.delete(self.listener.as_fd()).is_ok() {
            self.accept_paused = Some(std::time::Instant::now() + ACCEPT_PAUSE);
        }
    }

    fn resume_accept(&mut self) {
        let Some(until) = self.accept_paused else {
            return;
        };
        if std::time::Instant::now() < until {
            return;
        }
        let ev = EpollEvent::new(EpollFlags::EPOLLIN, LISTENER);
        match self.epoll.add(self.listener.as_fd(), ev) {
            Ok(()) => self.accept_paused = None,
            Err(e) => log_line!("skiff-shim: watching the listener again: {e}"),
        }
    }

    /// A connection is readable or writable: write what is queued, read what came and answer
    /// it, a chunk at a time, as long as its peer takes the answers.
    fn serve(&mut self, id: u64) {
        self.flush(id);
        let mut buf = [0u8; READ_CHUNK];
        loop {
            let Some(conn) = self.conns.get_mut(&id) else {
                return;
            };
            if conn.eof || conn.out.len() - conn.sent > MAX_OUTPUT {
                // Read again once the answers are written (EPOLLOUT calls here again).
                break;
            }
            match conn.stream.read(&mut buf) {
                Ok(0) => conn.eof = true,
                Ok(n) => conn.frames.extend(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => conn.eof = true,
            }
            let mut frames = Vec::new();
            loop {
                match conn.frames.next_frame() {
                    Ok(Some(frame)) => frames.push(Ok(frame)),
                    Ok(None) => break,
                    Err(e) => frames.push(Err(e)),
                }
            }
            for frame in frames {
                match frame {
                    Ok((header, payload)) => self.frame(id, header, payload),
                    Err(e @ WireError::TooLong { stream_id, .. }) => {
                        let res = error_response(Code::RESOURCE_EXHAUSTED, e.to_string());
                        self.respond(id, stream_id, &res);
                    }
                }
            }
            self.flush(id);
        }
        self.flush(id);
    }

    /// One frame, checked as ttrpc-go checks it.
    fn frame(&mut self, conn: u64, header: Header, payload: Vec<u8>) {
        let refuse = |msg: &str| error_response(Code::INVALID_ARGUMENT, msg.to_string());
        if header.stream_id % 2 != 1 {
            let res = refuse("StreamID must be odd for client initiated streams");
            return self.respond(conn, header.stream_id, &res);
        }
        match header.kind {
            TYPE_REQUEST => {}
            TYPE_DATA => {
                // No Task call opens a stream, so no stream is ever active.
                let res = refuse("StreamID is no longer active");
                return self.respond(conn, header.stream_id, &res);
            }
            // Frame types of later protocol versions are ignored.
            _ => return,
        }
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if header.stream_id <= c.last_stream {
            let res = refuse("StreamID cannot be re-used and must increment");
            return self.respond(conn, header.stream_id, &res);
        }
        c.last_stream = header.stream_id;
        self.request(conn, header, payload);
    }

    fn request(&mut self, conn: u64, header: Header, payload: Vec<u8>) {
        let req = match Request::parse_from_bytes(&payload) {
            Ok(r) => r,
            Err(e) => {
                let res = error_response(
                    Code::INVALID_ARGUMENT,
                    format!("unmarshal request error: {e}"),
                );
                return self.respond(conn, header.stream_id, &res);
            }
        };
        let path = format!("/{}/{}", req.service, req.method);
        if !self.gate.ready(&path, &req.payload) {
            if self.parked.iter().filter(|p| p.conn == conn).count() >= MAX_PARKED {
                let res = error_response(
                    Code::RESOURCE_EXHAUSTED,
                    format!("more than {MAX_PARKED} calls waiting on this connection"),
                );
                return self.respond(conn, header.stream_id, &res);
            }
            self.parked.push(Parked {
                conn,
                stream_id: header.stream_id,
                path,
                req,
            });
            return;
        }
        self.dispatch(conn, header.stream_id, &path, req);
    }

    /// Run the handler for `path` (here, or on a worker) and queue its response.
    fn dispatch(&mut self, conn: u64, stream_id: u32, path: &str, req: Request) {
        let Some(fd) = self.conns.get(&conn).map(|c| c.stream.as_raw_fd()) else {
            return;
        };
        let Some(handler) = self.methods.get(path).cloned() else {
            let res = self.unimplemented(path);
            return self.respond(conn, stream_id, &res);
        };
        let job = Job {
            conn,
            fd,
            stream_id,
            handler,
            req,
        };
        if !self.gate.offload(path) {
            let frames = run_job(job, &self.conn_ctx);
            if let Some(c) = self.conns.get_mut(&conn) {
                c.out.extend_from_slice(&frames);
            }
            return;
        }
        self.jobs.push_back(job);
        self.start_workers();
    }

    /// ttrpc-go's answer to a path it has no handler for: the service, else the method.
    fn unimplemented(&self, path: &str) -> Response {
        let service = path.rsplit_once('/').map_or(path, |(s, _)| s);
        let known = self
            .methods
            .keys()
            .any(|k| k.rsplit_once('/').is_some_and(|(s, _)| s == service));
        let what = if known {
            format!("method {}", path.rsplit('/').next().unwrap_or_default())
        } else {
            format!("service {}", service.trim_start_matches('/'))
        };
        error_response(Code::UNIMPLEMENTED, what)
    }

    /// Start queued calls while workers are free.
    fn start_workers(&mut self) {
        while self.workers < MAX_WORKERS {
            let Some(job) = self.jobs.pop_front() else {
                return;
            };
            let (conn, stream_id) = (job.conn, job.stream_id);
            let done = self.done_tx.clone();
            let waker = self.waker.clone();
            let conn_ctx = self.conn_ctx.clone();
            // 8 MiB, as a process's main thread has: a call that serves an exec or a lifecycle
            // command in-process forks, and the child runs the runtime's code on this stack
            // (`direct`, `Runtime::output`). Only the pages touched are ever memory.
            let spawned = std::thread::Builder::new()
                .name("call".into())
                .stack_size(8 << 20)
                .spawn(move || {
                    let frames = run_job(job, &conn_ctx);
                    let _ = done.send(Done { conn, frames });
                    waker.wake();
                });
            match spawned {
                Ok(_) => self.workers += 1,
                Err(e) => {
                    let res = error_response(Code::UNAVAILABLE, format!("no worker thread: {e}"));
                    self.respond(conn, stream_id, &res);
                    self.flush(conn);
                    return;
                }
            }
        }
    }

    /// Before stopping: let the calls in flight finish (a `Delete` of another container may
    /// still be publishing its `TaskDelete`), at most [`STOP_GRACE`]; queued ones are dropped.
    fn finish_workers(&mut self) {
        self.jobs.clear();
        let deadline = std::time::Instant::now() + STOP_GRACE;
        while self.workers > 0 {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.done_rx.recv_timeout(left) {
                Ok(done) => {
                    self.workers -= 1;
                    if let Some(c) = self.conns.get_mut(&done.conn) {
                        c.out.extend_from_slice(&done.frames);
                    }
                }
                Err(_) => return,
            }
        }
    }

    /// Queue the answers the workers finished and start waiting calls.
    fn collect_done(&mut self) {
        let mut touched = Vec::new();
        while let Ok(done) = self.done_rx.try_recv() {
            self.workers = self.workers.saturating_sub(1);
            if let Some(c) = self.conns.get_mut(&done.conn) {
                c.out.extend_from_slice(&done.frames);
                touched.push(done.conn);
            }
        }
        self.start_workers();
        touched.dedup();
        for id in touched {
            self.flush(id);
        }
    }

    fn respond(&mut self, conn: u64, stream_id: u32, res: &Response) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        match res.write_to_bytes() {
            Ok(buf) => put_frame(&mut c.out, stream_id, TYPE_RESPONSE, &buf),
            Err(e) => log_line!("skiff-shim: encoding a response: {e}"),
        }
    }

    /// Answer the parked requests that can be answered now.
    fn retry_parked(&mut self) {
        let mut touched = Vec::new();
        for p in std::mem::take(&mut self.parked) {
            if !self.conns.contains_key(&p.conn) {
                continue;
            }
            if self.gate.ready(&p.path, &p.req.payload) {
                touched.push(p.conn);
                self.dispatch(p.conn, p.stream_id, &p.path, p.req);
            } else {
                self.parked.push(p);
            }
        }
        touched.dedup();
        for id in touched {
            self.flush(id);
        }
    }

    /// Write what the connection has queued; close it when the peer is gone.
    fn flush(&mut self, id: u64) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        while c.sent < c.out.len() {
            match c.stream.write(&c.out[c.sent..]) {
                Ok(0) => {
                    c.eof = true;
                    break;
                }
                Ok(n) => c.sent += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    // The peer is gone: nothing queued can be delivered.
                    c.eof = true;
                    c.out.clear();
                    c.sent = 0;
                    break;
                }
            }
        }
        if c.sent == c.out.len() {
            c.out = Vec::new();
            c.sent = 0;
        }
        if c.eof && c.out.is_empty() {
            self.close(id);
        }
    }

    fn close(&mut self, id: u64) {
        if let Some(c) = self.conns.remove(&id) {
            let _ = self.epoll.delete(c.stream.as_fd());
        }
        self.parked.retain(|p| p.conn != id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::mpsc::sync_channel;

    use skiff_proto::api::{
        CreateTaskRequest, CreateTaskResponse, Empty, StateRequest, StateResponse, WaitRequest,
        WaitResponse,
    };
    use skiff_proto::protos::shim_sync::Task;
    use skiff_proto::ttrpc::proto::MESSAGE_HEADER_LENGTH;

    use crate::wire::HEADER_LEN;

    /// Answers State at once; Wait only once `done` is set.
    struct Fake {
        done: AtomicBool,
    }

    impl Task for Fake {
        fn state(&self, _: &TtrpcContext, req: StateRequest) -> ttrpc::Result<StateResponse> {
            let mut r = StateResponse::new();
            r.id = req.id;
            Ok(r)
        }
        fn wait(&self, _: &TtrpcContext, _: WaitRequest) -> ttrpc::Result<WaitResponse> {
            let mut r = WaitResponse::new();
            r.exit_status = 7;
            Ok(r)
        }
        /// Hangs until `done`, like a runtime call that does not return.
        fn create(
            &self,
            _: &TtrpcContext,
            _: CreateTaskRequest,
        ) -> ttrpc::Result<CreateTaskResponse> {
            while !self.done.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(10));
            }
            let mut r = CreateTaskResponse::new();
            r.pid = 42;
            Ok(r)
        }
    }

    struct FakeGate(Arc<Fake>);

    impl Gate for FakeGate {
        fn ready(&self, path: &str, _: &[u8]) -> bool {
            !path.ends_with("/Wait") || self.0.done.load(Ordering::SeqCst)
        }
        fn offload(&self, path: &str) -> bool {
            path.ends_with("/Create")
        }
    }

    fn call(s: &mut UnixStream, stream_id: u32, method: &str, payload: Vec<u8>) {
        call_service(s, stream_id, "containerd.task.v2.Task", method, payload);
    }

    fn call_service(
        s: &mut UnixStream,
        stream_id: u32,
        service: &str,
        method: &str,
        payload: Vec<u8>,
    ) {
        let mut req = Request::new();
        req.service = service.into();
        req.method = method.into();
        req.payload = payload;
        let mut out = Vec::new();
        put_frame(
            &mut out,
            stream_id,
            TYPE_REQUEST,
            &req.write_to_bytes().unwrap(),
        );
        s.write_all(&out).unwrap();
    }

    fn answer(s: &mut UnixStream) -> (u32, Response) {
        let mut head = [0u8; HEADER_LEN];
        s.read_exact(&mut head).unwrap();
        let h = Header::decode(&head);
        assert_eq!(h.kind, TYPE_RESPONSE);
        let mut body = vec![0u8; h.length as usize];
        s.read_exact(&mut body).unwrap();
        (h.stream_id, Response::parse_from_bytes(&body).unwrap())
    }

    #[test]
    fn requests_are_answered_and_a_wait_is_parked_until_woken() {
        assert_eq!(HEADER_LEN, MESSAGE_HEADER_LENGTH);
        let dir = std::env::temp_dir().join(format!("skiff-server-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        let fake = Arc::new(Fake {
            done: AtomicBool::new(false),
        });
        let methods = skiff_proto::service::task_methods(fake.clone());
        let waker = Arc::new(Waker::new().unwrap());
        let (stop_tx, stop_rx) = sync_channel(1);
        let server = Server::new(
            listener,
            methods,
            Arc::new(FakeGate(fake.clone())),
            waker.clone(),
            stop_rx,
        )
        .unwrap();
        let thread = std::thread::spawn(move || server.run());

        let mut c = UnixStream::connect(&path).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut wait = WaitRequest::new();
        wait.id = "c1".into();
        call(&mut c, 1, "Wait", wait.write_to_bytes().unwrap());
        let mut state = StateRequest::new();
        state.id = "c1".into();
        call(&mut c, 3, "State", state.write_to_bytes().unwrap());
        // The State behind the parked Wait is answered first.
        let (id, res) = answer(&mut c);
        assert_eq!(id, 3);
        assert_eq!(
            StateResponse::parse_from_bytes(&res.payload).unwrap().id,
            "c1"
        );
        // A second connection is served while the first has a parked call.
        let mut c2 = UnixStream::connect(&path).unwrap();
        c2.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        call(&mut c2, 1, "Nope", Empty::new().write_to_bytes().unwrap());
        let (_, res) = answer(&mut c2);
        assert_eq!(res.status.code.value(), Code::UNIMPLEMENTED as i32);
        assert_eq!(res.status.message, "method Nope");
        drop(c2);

        fake.done.store(true, Ordering::SeqCst);
        waker.wake();
        let (id, res) = answer(&mut c);
        assert_eq!(id, 1);
        assert_eq!(
            WaitResponse::parse_from_bytes(&res.payload)
                .unwrap()
                .exit_status,
            7
        );

        stop_tx.send(()).unwrap();
        // Any event lets the loop see the stop.
        call(&mut c, 5, "State", state.write_to_bytes().unwrap());
        thread.join().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A server on a fresh socket with [`Fake`]; returns what the test needs to drive and stop it.
    struct Running {
        dir: std::path::PathBuf,
        path: std::path::PathBuf,
        fake: Arc<Fake>,
        stop: std::sync::mpsc::SyncSender<()>,
        thread: std::thread::JoinHandle<()>,
    }

    fn run_server(name: &str) -> Running {
        let dir = std::env::temp_dir().join(format!("skiff-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        let fake = Arc::new(Fake {
            done: AtomicBool::new(false),
        });
        let methods = skiff_proto::service::task_methods(fake.clone());
        let waker = Arc::new(Waker::new().unwrap());
        let (stop, stop_rx) = sync_channel(1);
        let gate = Arc::new(FakeGate(fake.clone()));
        let server = Server::new(listener, methods, gate, waker, stop_rx).unwrap();
        let thread = std::thread::spawn(move || server.run());
        Running {
            dir,
            path,
            fake,
            stop,
            thread,
        }
    }

    impl Running {
        fn connect(&self) -> UnixStream {
            let c = UnixStream::connect(&self.path).unwrap();
            // Generous: the machine is shared and other tests load it.
            c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            c
        }

        fn stop(self) {
            self.fake.done.store(true, Ordering::SeqCst);
            self.stop.send(()).unwrap();
            // Any event lets the loop see the stop; a loop that saw it already (an answer's
            // write woke it) has closed the listener, and the connect is refused.
            let _ = UnixStream::connect(&self.path);
            self.thread.join().unwrap();
            std::fs::remove_dir_all(&self.dir).unwrap();
        }
    }

    fn state_req(id: &str) -> Vec<u8> {
        let mut r = StateRequest::new();
        r.id = id.into();
        r.write_to_bytes().unwrap()
    }

    fn code(res: &Response) -> i32 {
        res.status.code.value()
    }

    #[test]
    fn the_wire_is_checked_as_ttrpc_go_checks_it() {
        let srv = run_server("wire");
        let mut c = srv.connect();
        // An unknown service and an unknown method.
        call_service(&mut c, 1, "no.such.Service", "State", state_req("a"));
        let (id, res) = answer(&mut c);
        assert_eq!((id, code(&res)), (1, Code::UNIMPLEMENTED as i32));
        assert_eq!(res.status.message, "service no.such.Service");
        // An even stream id, then a reused one.
        call(&mut c, 4, "State", state_req("a"));
        let (id, res) = answer(&mut c);
        assert_eq!((id, code(&res)), (4, Code::INVALID_ARGUMENT as i32));
        call(&mut c, 1, "State", state_req("a"));
        let (id, res) = answer(&mut c);
        assert_eq!((id, code(&res)), (1, Code::INVALID_ARGUMENT as i32));
        assert!(res.status.message.contains("re-used"), "{res:?}");
        // A data frame: no stream is open.
        let mut out = Vec::new();
        put_frame(&mut out, 5, crate::wire::TYPE_DATA, b"x");
        c.write_all(&out).unwrap();
        let (id, res) = answer(&mut c);
        assert_eq!((id, code(&res)), (5, Code::INVALID_ARGUMENT as i32));
        // An over-long frame: refused on its stream, skipped, and the connection goes on.
        let big = Header {
            length: (crate::wire::MAX_PAYLOAD + 1) as u32,
            stream_id: 7,
            kind: TYPE_REQUEST,
            flags: 0,
        };
        c.write_all(&big.encode()).unwrap();
        c.write_all(&vec![0u8; crate::wire::MAX_PAYLOAD + 1])
            .unwrap();
        let (id, res) = answer(&mut c);
        assert_eq!((id, code(&res)), (7, Code::RESOURCE_EXHAUSTED as i32));
        call(&mut c, 9, "State", state_req("still"));
        let (id, res) = answer(&mut c);
        assert_eq!((id, code(&res)), (9, Code::OK as i32));
        assert_eq!(
            StateResponse::parse_from_bytes(&res.payload).unwrap().id,
            "still"
        );
        srv.stop();
    }

    #[test]
    fn a_hanging_call_runs_off_the_serving_thread() {
        let srv = run_server("offload");
        let mut c = srv.connect();
        call(
            &mut c,
            1,
            "Create",
            CreateTaskRequest::new().write_to_bytes().unwrap(),
        );
        // The Create hangs; State on the same connection and another is answered meanwhile.
        call(&mut c, 3, "State", state_req("a"));
        let (id, res) = answer(&mut c);
        assert_eq!((id, code(&res)), (3, Code::OK as i32));
        let mut c2 = srv.connect();
        call(&mut c2, 1, "State", state_req("b"));
        assert_eq!(answer(&mut c2).0, 1);
        srv.fake.done.store(true, Ordering::SeqCst);
        let (id, res) = answer(&mut c);
        assert_eq!(id, 1);
        assert_eq!(
            CreateTaskResponse::parse_from_bytes(&res.payload)
                .unwrap()
                .pid,
            42
        );
        srv.stop();
    }

    #[test]
    fn a_peer_that_does_not_read_its_answers_is_not_read_from() {
        let srv = run_server("backpressure");
        let mut c = srv.connect();
        c.set_nonblocking(true).unwrap();
        // Requests whose answers (State echoes the id) outgrow the output bound many times.
        let id = "x".repeat(60_000);
        let mut written = 0usize;
        let mut stream_id = 1u32;
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        let mut frame = Vec::new();
        while std::time::Instant::now() < deadline {
            if frame.is_empty() {
                let mut req = Request::new();
                req.service = "containerd.task.v2.Task".into();
                req.method = "State".into();
                req.payload = state_req(&id);
                let body = req.write_to_bytes().unwrap();
                put_frame(&mut frame, stream_id, TYPE_REQUEST, &body);
                stream_id += 2;
            }
            match c.write(&frame) {
                Ok(n) => {
                    written += n;
                    frame.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("{e}"),
            }
        }
        // The server stopped reading: the socket's buffers filled and writing blocks, with far
        // less written than unbounded buffering would have swallowed in that time.
        assert!(
            written < 8 << 20,
            "the server kept reading: {written} bytes taken"
        );
        // It still serves others.
        let mut c2 = srv.connect();
        call(&mut c2, 1, "State", state_req("b"));
        assert_eq!(answer(&mut c2).0, 1);
        drop(c);
        srv.stop();
    }

    #[test]
    fn a_connection_parks_a_bounded_number_of_calls() {
        let srv = run_server("parked");
        let mut c = srv.connect();
        let mut wait = WaitRequest::new();
        wait.id = "c1".into();
        let body = wait.write_to_bytes().unwrap();
        let mut stream_id = 1;
        for _ in 0..MAX_PARKED {
            call(&mut c, stream_id, "Wait", body.clone());
            stream_id += 2;
        }
        call(&mut c, stream_id, "Wait", body.clone());
        let (id, res) = answer(&mut c);
        assert_eq!(
            (id, code(&res)),
            (stream_id, Code::RESOURCE_EXHAUSTED as i32)
        );
        srv.stop();
    }
}

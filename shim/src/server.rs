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
//!   empty, so an idle connection costs a socket and a few words.
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

use crate::wire::{put_frame, Frames, Header, TYPE_REQUEST, TYPE_RESPONSE};

const LISTENER: u64 = 0;
const WAKER: u64 = 1;
/// Bytes read from a socket at a time.
const READ_CHUNK: usize = 8 * 1024;
/// Offloaded calls running at once; more wait in a queue.
const MAX_WORKERS: usize = 32;

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
        })
    }

    /// Serve until `stop` receives.
    pub fn run(mut self) {
        let mut events = [EpollEvent::empty(); 32];
        loop {
            let n = match self.epoll.wait(&mut events, EpollTimeout::NONE) {
                Ok(n) => n,
                Err(Errno::EINTR) => 0,
                Err(e) => {
                    log_line!("skiff-shim: epoll_wait: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                    0
                }
            };
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
                    // EMFILE and the like: the connection waits in the backlog; do not spin.
                    log_line!("skiff-shim: accept: {e}");
                    std::thread::sleep(Duration::from_millis(100));
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
                },
            );
        }
    }

    /// A connection is readable or writable: read what came, answer it, write what is queued.
    fn serve(&mut self, id: u64) {
        let mut requests = Vec::new();
        {
            let Some(conn) = self.conns.get_mut(&id) else {
                return;
            };
            let mut buf = [0u8; READ_CHUNK];
            while !conn.eof {
                match conn.stream.read(&mut buf) {
                    Ok(0) => conn.eof = true,
                    Ok(n) => conn.frames.extend(&buf[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => conn.eof = true,
                }
            }
            loop {
                match conn.frames.next_frame() {
                    Ok(Some(frame)) => requests.push(frame),
                    Ok(None) => break,
                    Err(e) => {
                        log_line!("skiff-shim: closing a connection: {e}");
                        conn.eof = true;
                        break;
                    }
                }
            }
        }
        for (header, payload) in requests {
            self.request(id, header, payload);
        }
        self.flush(id);
    }

    fn request(&mut self, conn: u64, header: Header, payload: Vec<u8>) {
        if header.kind != TYPE_REQUEST {
            return;
        }
        let req = match Request::parse_from_bytes(&payload) {
            Ok(r) => r,
            Err(e) => {
                let res = error_response(Code::INVALID_ARGUMENT, format!("decoding request: {e}"));
                return self.respond(conn, header.stream_id, &res);
            }
        };
        let path = format!("/{}/{}", req.service, req.method);
        if !self.gate.ready(&path, &req.payload) {
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
            let res = error_response(Code::INVALID_ARGUMENT, format!("{path} does not exist"));
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
            let spawned = std::thread::Builder::new()
                .name("call".into())
                .stack_size(256 * 1024)
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

    use skiff_proto::api::{Empty, StateRequest, StateResponse, WaitRequest, WaitResponse};
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
        let mut req = Request::new();
        req.service = "containerd.task.v2.Task".into();
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
        assert_eq!(res.status.code.value(), Code::INVALID_ARGUMENT as i32);
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
}

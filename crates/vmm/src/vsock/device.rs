//! The vsock device model: the guest's virtio-vsock queues on one side, host Unix sockets on
//! the other (Firecracker's hybrid vsock convention).
//!
//! - Host → guest: a host process connects to `vsock.sock`, writes `CONNECT <port>\n`; the
//!   device sends the guest a REQUEST from a fresh host port, and on the guest's RESPONSE
//!   answers `OK <host port>\n`. From then on the Unix stream is the connection.
//! - Guest → host: a REQUEST to host port P is connected to the Unix socket `vsock.sock_P`;
//!   RST when nothing listens there.
//!
//! Flow control is virtio-vsock's credit scheme: each side advertises its receive buffer
//! (`buf_alloc`) and how much of it it has consumed (`fwd_cnt`). The device reads from a host
//! stream only what the guest has room for, and buffers at most `BUF_ALLOC` bytes the guest sent
//! that the host has not read yet. Streams are watched (level-triggered epoll) only for what can
//! make progress, so an idle or blocked connection costs no CPU.

use std::collections::{HashMap, VecDeque};
use std::io::{self, ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost_user_backend::{VhostUserBackend, VringEpollHandler, VringRwLock, VringT};
use virtio_queue::QueueOwnedT;
use virtio_vsock::packet::{VsockPacket, PKT_HEADER_SIZE};
use vm_memory::{GuestAddressSpace, GuestMemoryAtomic, GuestMemoryLoadGuard, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    new_event_consumer_and_notifier, EventConsumer, EventFlag, EventNotifier,
};

type Mem = GuestMemoryAtomic<GuestMemoryMmap>;
pub(crate) type Handler = VringEpollHandler<Arc<Device>>;

const RX: u16 = 0;
const TX: u16 = 1;
const EVENT: u16 = 2;
const QUEUES: usize = 3;
const QUEUE_SIZE: usize = 256;
/// Epoll tokens: 0..=QUEUES are the library's (queues and its exit event).
const LISTENER: u64 = QUEUES as u64 + 1;
const FIRST_STREAM: u64 = LISTENER + 1;

const HOST_CID: u64 = 2;
const TYPE_STREAM: u16 = 1;
const OP_REQUEST: u16 = 1;
const OP_RESPONSE: u16 = 2;
const OP_RST: u16 = 3;
const OP_SHUTDOWN: u16 = 4;
const OP_RW: u16 = 5;
const OP_CREDIT_UPDATE: u16 = 6;
const OP_CREDIT_REQUEST: u16 = 7;
const SHUTDOWN_RCV: u32 = 1;
const SHUTDOWN_SEND: u32 = 2;

/// Our receive buffer per connection: guest data the host has not read yet.
const BUF_ALLOC: u32 = 256 * 1024;
/// Largest payload per packet, as Linux' virtio transport.
const MAX_PKT: u32 = 64 * 1024;
/// Host ports handed to host-initiated connections start here (Firecracker's choice).
const FIRST_HOST_PORT: u32 = 1 << 30;
/// A `CONNECT <port>\n` line longer than this is not one.
const MAX_CONNECT_LINE: usize = 32;

/// A connection, keyed by (host port, guest port).
type Key = (u32, u32);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Host-initiated: REQUEST sent, waiting for the guest's RESPONSE.
    Connecting,
    Established,
}

struct Conn {
    stream: UnixStream,
    token: u64,
    phase: Phase,
    /// The guest's receive buffer and how much of it it has consumed.
    peer_buf_alloc: u32,
    peer_fwd_cnt: u32,
    /// Bytes sent to the guest.
    tx_cnt: u32,
    /// Bytes of the guest's data written to the host stream, and the count last told.
    fwd_cnt: u32,
    told_fwd_cnt: u32,
    /// Guest data not yet written to the host (at most BUF_ALLOC).
    to_host: Vec<u8>,
    /// Host data read but not yet placed in an RX buffer (at most one packet).
    to_guest: Vec<u8>,
    /// The host stream hit EOF; the guest has been told (SHUTDOWN).
    host_eof: bool,
    /// The epoll interest currently registered.
    interest: EventSet,
}

impl Conn {
    fn credit(&self) -> u32 {
        self.peer_buf_alloc
            .saturating_sub(self.tx_cnt.wrapping_sub(self.peer_fwd_cnt))
    }

    fn wanted(&self) -> EventSet {
        let mut e = EventSet::empty();
        if self.phase == Phase::Established
            && self.to_guest.is_empty()
            && !self.host_eof
            && self.credit() > 0
        {
            e |= EventSet::IN;
        }
        if !self.to_host.is_empty() {
            e |= EventSet::OUT;
        }
        e
    }
}

/// A host stream that has not said `CONNECT <port>` yet.
struct Pending {
    stream: UnixStream,
    line: Vec<u8>,
}

/// A control packet for the guest: op, host port, guest port, shutdown flags.
struct Ctrl {
    op: u16,
    key: Key,
    flags: u32,
}

struct State {
    cid: u64,
    mem: Option<Mem>,
    listener: UnixListener,
    /// `vsock.sock`; guest connections to port P go to `vsock.sock_P`.
    uds: PathBuf,
    epoll: Option<Arc<Handler>>,
    pending: HashMap<u64, Pending>,
    conns: HashMap<Key, Conn>,
    tokens: HashMap<u64, Key>,
    next_token: u64,
    next_host_port: u32,
    ctrl: VecDeque<Ctrl>,
}

/// The device; the vhost-user daemon calls into it from its worker thread.
pub(crate) struct Device {
    state: Mutex<State>,
    exit: (EventConsumer, EventNotifier),
}

impl Device {
    pub(crate) fn new(cid: u64, uds: PathBuf, listener: UnixListener) -> io::Result<Device> {
        listener.set_nonblocking(true)?;
        Ok(Device {
            state: Mutex::new(State {
                cid,
                mem: None,
                listener,
                uds,
                epoll: None,
                pending: HashMap::new(),
                conns: HashMap::new(),
                tokens: HashMap::new(),
                next_token: FIRST_STREAM,
                next_host_port: FIRST_HOST_PORT,
                ctrl: VecDeque::new(),
            }),
            exit: new_event_consumer_and_notifier(EventFlag::NONBLOCK)?,
        })
    }

    /// Hand the device its worker's epoll, and watch the host listener.
    pub(crate) fn attach(&self, epoll: Arc<Handler>) -> io::Result<()> {
        let mut st = self.state.lock().unwrap();
        epoll.register_listener(st.listener.as_raw_fd(), EventSet::IN, LISTENER)?;
        st.epoll = Some(epoll);
        Ok(())
    }

    /// Drop every connection and the epoll handle (which refers back to the device).
    pub(crate) fn detach(&self) {
        let mut st = self.state.lock().unwrap();
        st.conns.clear();
        st.pending.clear();
        st.tokens.clear();
        st.epoll = None;
    }

    pub(crate) fn stop_worker(&self) {
        let _ = self.exit.1.notify();
    }
}

impl VhostUserBackend for Device {
    type Bitmap = ();
    type Vring = VringRwLock;

    fn num_queues(&self) -> usize {
        QUEUES
    }

    fn max_queue_size(&self) -> usize {
        QUEUE_SIZE
    }

    fn features(&self) -> u64 {
        (1 << virtio_bindings::virtio_config::VIRTIO_F_VERSION_1)
            | (1 << virtio_bindings::virtio_config::VIRTIO_F_NOTIFY_ON_EMPTY)
            | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::CONFIG
    }

    fn set_event_idx(&self, _enabled: bool) {}

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        // struct virtio_vsock_config { le64 guest_cid; }
        let cfg = self.state.lock().unwrap().cid.to_le_bytes();
        let start = (offset as usize).min(cfg.len());
        let end = (start + size as usize).min(cfg.len());
        cfg[start..end].to_vec()
    }

    fn update_memory(&self, mem: Mem) -> io::Result<()> {
        self.state.lock().unwrap().mem = Some(mem);
        Ok(())
    }

    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        Some((self.exit.0.try_clone().ok()?, self.exit.1.try_clone().ok()?))
    }

    fn handle_event(
        &self,
        device_event: u16,
        evset: EventSet,
        vrings: &[VringRwLock],
        _thread_id: usize,
    ) -> io::Result<()> {
        let mut st = self.state.lock().unwrap();
        let Some(mem) = st.mem.clone() else {
            return Ok(());
        };
        let mem = mem.memory();
        // An error returned from here ends the worker thread for good, so queue trouble (a
        // queue the guest has not set up yet, say) is logged and retried on the next event.
        match u64::from(device_event) {
            t if t == u64::from(TX) => {
                if let Err(e) = st.process_tx(&mem, &vrings[TX as usize]) {
                    tracing::debug!("vsock: {e}");
                }
            }
            t if t == u64::from(RX) || t == u64::from(EVENT) => {}
            LISTENER => st.accept(),
            token => st.stream_event(token, evset),
        }
        // Whatever happened may let data or control packets move towards the guest.
        if let Err(e) = st.fill_rx(&mem, &vrings[RX as usize]) {
            tracing::debug!("vsock: {e}");
        }
        st.update_interest();
        Ok(())
    }
}

impl State {
    fn alloc_token(&mut self) -> u64 {
        let t = self.next_token;
        self.next_token += 1;
        t
    }

    fn register(&self, fd: i32, events: EventSet, token: u64) {
        if let Some(ep) = &self.epoll {
            if let Err(e) = ep.register_listener(fd, events, token) {
                tracing::warn!("vsock: watching a stream: {e}");
            }
        }
    }

    fn unregister(&self, fd: i32, events: EventSet, token: u64) {
        if let Some(ep) = &self.epoll {
            let _ = ep.unregister_listener(fd, events, token);
        }
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if stream.set_nonblocking(true).is_err() {
                        continue;
                    }
                    let token = self.alloc_token();
                    self.register(stream.as_raw_fd(), EventSet::IN, token);
                    self.pending.insert(
                        token,
                        Pending {
                            stream,
                            line: Vec::new(),
                        },
                    );
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::warn!("vsock: accept: {e}");
                    return;
                }
            }
        }
    }

    fn stream_event(&mut self, token: u64, evset: EventSet) {
        if self.pending.contains_key(&token) {
            self.read_connect_line(token);
            return;
        }
        let Some(&key) = self.tokens.get(&token) else {
            return;
        };
        if evset.contains(EventSet::OUT) {
            self.flush_to_host(key);
        }
        if evset.intersects(EventSet::IN | EventSet::HANG_UP | EventSet::ERROR) {
            self.read_from_host(key);
        }
    }

    /// Read what a new host stream says; on a whole `CONNECT <port>` line, ask the guest.
    fn read_connect_line(&mut self, token: u64) {
        let p = self.pending.get_mut(&token).expect("pending stream");
        let mut byte = [0u8; 1];
        let port = loop {
            match p.stream.read(&mut byte) {
                Ok(0) => break Err(()),
                Ok(_) if byte[0] == b'\n' => {
                    let line = String::from_utf8_lossy(&p.line).into_owned();
                    break line
                        .strip_prefix("CONNECT ")
                        .and_then(|n| n.trim().parse::<u32>().ok())
                        .ok_or(());
                }
                Ok(_) if p.line.len() >= MAX_CONNECT_LINE => break Err(()),
                Ok(_) => p.line.push(byte[0]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(_) => break Err(()),
            }
        };
        let p = self.pending.remove(&token).expect("pending stream");
        self.unregister(p.stream.as_raw_fd(), EventSet::IN, token);
        let Ok(guest_port) = port else {
            return; // dropping the stream closes it
        };
        let host_port = self.next_host_port;
        self.next_host_port = self.next_host_port.wrapping_add(1).max(FIRST_HOST_PORT);
        let key = (host_port, guest_port);
        self.insert_conn(key, p.stream, Phase::Connecting, 0, 0);
        self.ctrl.push_back(Ctrl {
            op: OP_REQUEST,
            key,
            flags: 0,
        });
    }

    fn insert_conn(&mut self, key: Key, stream: UnixStream, phase: Phase, buf: u32, fwd: u32) {
        let token = self.alloc_token();
        self.tokens.insert(token, key);
        self.conns.insert(
            key,
            Conn {
                stream,
                token,
                phase,
                peer_buf_alloc: buf,
                peer_fwd_cnt: fwd,
                tx_cnt: 0,
                fwd_cnt: 0,
                told_fwd_cnt: 0,
                to_host: Vec::new(),
                to_guest: Vec::new(),
                host_eof: false,
                interest: EventSet::empty(),
            },
        );
    }

    fn remove_conn(&mut self, key: Key) {
        if let Some(c) = self.conns.remove(&key) {
            if !c.interest.is_empty() {
                self.unregister(c.stream.as_raw_fd(), c.interest, c.token);
            }
            self.tokens.remove(&c.token);
        }
    }

    /// Close a connection from the host side: tell the guest with RST.
    fn reset(&mut self, key: Key) {
        self.remove_conn(key);
        self.ctrl.push_back(Ctrl {
            op: OP_RST,
            key,
            flags: 0,
        });
    }

    fn flush_to_host(&mut self, key: Key) {
        let Some(c) = self.conns.get_mut(&key) else {
            return;
        };
        while !c.to_host.is_empty() {
            match c.stream.write(&c.to_host) {
                Ok(n) => {
                    c.to_host.drain(..n);
                    c.fwd_cnt = c.fwd_cnt.wrapping_add(n as u32);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => {
                    self.reset(key);
                    return;
                }
            }
        }
        // Tell the guest about freed buffer before it has to ask.
        if c.fwd_cnt.wrapping_sub(c.told_fwd_cnt) >= BUF_ALLOC / 4 {
            self.ctrl.push_back(Ctrl {
                op: OP_CREDIT_UPDATE,
                key,
                flags: 0,
            });
        }
    }

    fn read_from_host(&mut self, key: Key) {
        let Some(c) = self.conns.get_mut(&key) else {
            return;
        };
        if c.phase != Phase::Established || !c.to_guest.is_empty() || c.host_eof {
            return;
        }
        let room = c.credit().min(MAX_PKT) as usize;
        if room == 0 {
            return;
        }
        let mut buf = vec![0u8; room];
        match c.stream.read(&mut buf) {
            Ok(0) => {
                // The host closed its end: the guest gets a full shutdown and answers RST.
                c.host_eof = true;
                self.ctrl.push_back(Ctrl {
                    op: OP_SHUTDOWN,
                    key,
                    flags: SHUTDOWN_RCV | SHUTDOWN_SEND,
                });
            }
            Ok(n) => {
                buf.truncate(n);
                c.to_guest = buf;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(_) => self.reset(key),
        }
    }

    /// Guest → host: every packet the guest queued on TX.
    fn process_tx(
        &mut self,
        mem: &GuestMemoryLoadGuard<GuestMemoryMmap>,
        vring: &VringRwLock,
    ) -> io::Result<()> {
        let mut used = false;
        loop {
            let chain = vring
                .get_mut()
                .get_queue_mut()
                .iter(mem.clone())
                .map_err(|e| io::Error::other(format!("vsock TX queue: {e}")))?
                .next();
            let Some(mut chain) = chain else { break };
            let head = chain.head_index();
            match VsockPacket::from_tx_virtq_chain(&**mem, &mut chain, MAX_PKT) {
                Ok(pkt) => self.on_guest_packet(&pkt),
                Err(e) => tracing::warn!("vsock: bad TX packet: {e}"),
            }
            vring
                .add_used(head, 0)
                .map_err(|e| io::Error::other(format!("vsock TX queue: {e}")))?;
            used = true;
        }
        if used {
            vring.signal_used_queue()?;
        }
        Ok(())
    }

    fn on_guest_packet<B: vm_memory::bitmap::BitmapSlice>(&mut self, pkt: &VsockPacket<'_, B>) {
        let key = (pkt.dst_port(), pkt.src_port());
        if pkt.dst_cid() != HOST_CID || pkt.src_cid() != self.cid || pkt.type_() != TYPE_STREAM {
            if pkt.op() != OP_RST {
                self.ctrl.push_back(Ctrl {
                    op: OP_RST,
                    key,
                    flags: 0,
                });
            }
            return;
        }
        if let Some(c) = self.conns.get_mut(&key) {
            c.peer_buf_alloc = pkt.buf_alloc();
            c.peer_fwd_cnt = pkt.fwd_cnt();
        }
        match pkt.op() {
            OP_REQUEST => self.guest_connects(key, pkt.buf_alloc(), pkt.fwd_cnt()),
            OP_RESPONSE => {
                let Some(c) = self.conns.get_mut(&key) else {
                    return self.ctrl.push_back(Ctrl {
                        op: OP_RST,
                        key,
                        flags: 0,
                    });
                };
                if c.phase == Phase::Connecting {
                    c.phase = Phase::Established;
                    // Firecracker's answer; it is the stream's first bytes, not guest data.
                    let ok = format!("OK {}\n", key.0);
                    c.to_host.splice(0..0, ok.bytes());
                    c.fwd_cnt = c.fwd_cnt.wrapping_sub(ok.len() as u32);
                    self.flush_to_host(key);
                }
            }
            OP_RW => {
                let Some(c) = self.conns.get_mut(&key) else {
                    return self.ctrl.push_back(Ctrl {
                        op: OP_RST,
                        key,
                        flags: 0,
                    });
                };
                let len = pkt.len() as usize;
                if let Some(data) = pkt.data_slice() {
                    let len = len.min(data.len());
                    if c.to_host.len() + len > BUF_ALLOC as usize {
                        // The guest ignored our credit: a protocol error.
                        return self.reset(key);
                    }
                    let at = c.to_host.len();
                    c.to_host.resize(at + len, 0);
                    if data.copy_to(&mut c.to_host[at..]) != len {
                        return self.reset(key);
                    }
                }
                self.flush_to_host(key);
            }
            OP_CREDIT_UPDATE => {}
            OP_CREDIT_REQUEST => {
                if self.conns.contains_key(&key) {
                    self.ctrl.push_back(Ctrl {
                        op: OP_CREDIT_UPDATE,
                        key,
                        flags: 0,
                    });
                }
            }
            OP_SHUTDOWN => {
                let flags = pkt.flags();
                if flags & SHUTDOWN_SEND != 0 {
                    // The guest sends no more: give the host what is buffered, then EOF.
                    self.flush_to_host(key);
                    if let Some(c) = self.conns.get(&key) {
                        let _ = c.stream.shutdown(std::net::Shutdown::Write);
                    }
                }
                if flags & (SHUTDOWN_RCV | SHUTDOWN_SEND) == SHUTDOWN_RCV | SHUTDOWN_SEND {
                    self.reset(key);
                }
            }
            OP_RST => self.remove_conn(key),
            _ => self.reset(key),
        }
    }

    /// The guest connects to host port `key.0`: a Unix socket `vsock.sock_<port>`.
    fn guest_connects(&mut self, key: Key, buf: u32, fwd: u32) {
        if self.conns.contains_key(&key) {
            return self.reset(key);
        }
        let mut path = self.uds.clone().into_os_string();
        path.push(format!("_{}", key.0));
        match UnixStream::connect(&path) {
            Ok(s) if s.set_nonblocking(true).is_ok() => {
                self.insert_conn(key, s, Phase::Established, buf, fwd);
                self.ctrl.push_back(Ctrl {
                    op: OP_RESPONSE,
                    key,
                    flags: 0,
                });
            }
            _ => self.ctrl.push_back(Ctrl {
                op: OP_RST,
                key,
                flags: 0,
            }),
        }
    }

    /// Host → guest: control packets first, then data, while the guest has RX buffers.
    fn fill_rx(
        &mut self,
        mem: &GuestMemoryLoadGuard<GuestMemoryMmap>,
        vring: &VringRwLock,
    ) -> io::Result<()> {
        let queue_err = |e: virtio_queue::Error| io::Error::other(format!("vsock RX queue: {e}"));
        let mut used = false;
        loop {
            let data_key = if self.ctrl.is_empty() {
                match self.conns.iter().find(|(_, c)| !c.to_guest.is_empty()) {
                    Some((k, _)) => Some(*k),
                    None => break,
                }
            } else {
                None
            };
            let chain = vring
                .get_mut()
                .get_queue_mut()
                .iter(mem.clone())
                .map_err(queue_err)?
                .next();
            let Some(mut chain) = chain else { break };
            let head = chain.head_index();
            let mut pkt = match VsockPacket::from_rx_virtq_chain(&**mem, &mut chain, MAX_PKT) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!("vsock: bad RX buffer: {e}");
                    vring.add_used(head, 0).map_err(queue_err)?;
                    used = true;
                    continue;
                }
            };
            let (op, key, flags, data) = match data_key {
                None => {
                    let c = self.ctrl.pop_front().expect("a control packet");
                    (c.op, c.key, c.flags, Vec::new())
                }
                Some(key) => {
                    let c = self.conns.get_mut(&key).expect("a connection");
                    let room = pkt.data_slice().map_or(0, |d| d.len());
                    let n = c.to_guest.len().min(room);
                    let data: Vec<u8> = c.to_guest.drain(..n).collect();
                    c.tx_cnt = c.tx_cnt.wrapping_add(n as u32);
                    (OP_RW, key, 0, data)
                }
            };
            let (buf_alloc, fwd_cnt) = match self.conns.get_mut(&key) {
                Some(c) => {
                    c.told_fwd_cnt = c.fwd_cnt;
                    (BUF_ALLOC, c.fwd_cnt)
                }
                None => (0, 0),
            };
            pkt.set_src_cid(HOST_CID)
                .set_dst_cid(self.cid)
                .set_src_port(key.0)
                .set_dst_port(key.1)
                .set_type(TYPE_STREAM)
                .set_op(op)
                .set_flags(flags)
                .set_buf_alloc(buf_alloc)
                .set_fwd_cnt(fwd_cnt)
                .set_len(data.len() as u32);
            if let Some(d) = pkt.data_slice() {
                d.copy_from(&data);
            }
            vring
                .add_used(head, (PKT_HEADER_SIZE + data.len()) as u32)
                .map_err(queue_err)?;
            used = true;
        }
        if used {
            vring.signal_used_queue()?;
        }
        Ok(())
    }

    /// Watch each stream for exactly what can make progress now.
    fn update_interest(&mut self) {
        let mut changes = Vec::new();
        for c in self.conns.values_mut() {
            let want = c.wanted();
            if want != c.interest {
                changes.push((c.stream.as_raw_fd(), c.interest, want, c.token));
                c.interest = want;
            }
        }
        for (fd, old, new, token) in changes {
            if !old.is_empty() {
                self.unregister(fd, old, token);
            }
            if !new.is_empty() {
                self.register(fd, new, token);
            }
        }
    }
}

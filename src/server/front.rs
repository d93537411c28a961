//! The front door: every TCP connection passes through here before pgwire
//! sees a byte. pgwire decodes a message of up to 1 GB in any state, before
//! authentication too, and counts a connection from its first message; the
//! gateway attack held every slot with clients that never answered SCRAM and
//! took gigabytes with unauthenticated 1 GB messages. The door:
//!
//! * negotiates TLS itself (SSLRequest → rustls), so it sees the protocol's
//!   frames in clear whether or not the client uses TLS;
//! * until the server says AuthenticationOk, lets through only the startup
//!   packet (≤ 10 000 bytes, as PostgreSQL) and SASL messages (≤ 16 KiB), and
//!   ends a client that has not authenticated within [`AUTH_DEADLINE`];
//! * after authentication, ends a client whose message is longer than
//!   [`MAX_MESSAGE`] before it is read;
//! * admits at most [`MAX_PENDING`] unauthenticated connections, and
//!   [`MAX_PENDING_PER_IP`] from one address (connection slots, `max_connections`,
//!   are taken only by authenticated analysts).
//!
//! Behind the door, pgwire serves the connection over a socket pair; the
//! connection's handlers are told the client's address and whether TLS is on.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Shared;

/// Time from connecting to AuthenticationOk.
pub const AUTH_DEADLINE: Duration = Duration::from_secs(10);
/// Unauthenticated connections at once.
pub const MAX_PENDING: usize = 128;
/// Unauthenticated connections at once from one address (a pool of clients
/// behind one address logs in together: the load test's fifty did).
pub const MAX_PENDING_PER_IP: usize = 64;
/// The startup packet's limit (PostgreSQL's).
const MAX_STARTUP: usize = 10_000;
/// A SASL message's limit (SCRAM messages are a few hundred bytes).
const MAX_SASL: usize = 16 << 10;
/// An authenticated client's longest message: a statement of the longest
/// accepted text, or a Bind with its parameters.
pub const MAX_MESSAGE: usize = 2 * super::conn::MAX_STATEMENT_BYTES + (64 << 10);

const SSL_REQUEST: u32 = 80_877_103;
const GSS_REQUEST: u32 = 80_877_104;

/// Unauthenticated connections, in total and per address.
#[derive(Default)]
pub struct Pending {
    per_ip: std::sync::Mutex<HashMap<IpAddr, usize>>,
}

/// A pending connection's place; given back on authentication or at the end.
struct Place<'a> {
    pending: &'a Pending,
    ip: IpAddr,
    held: bool,
}

impl Pending {
    fn admit(&self, ip: IpAddr) -> Option<Place<'_>> {
        let mut m = self.per_ip.lock().unwrap();
        let total: usize = m.values().sum();
        let mine = m.get(&ip).copied().unwrap_or(0);
        if total >= MAX_PENDING || mine >= MAX_PENDING_PER_IP {
            return None;
        }
        *m.entry(ip).or_insert(0) += 1;
        Some(Place { pending: self, ip, held: true })
    }
}

impl Place<'_> {
    fn release(&mut self) {
        if std::mem::take(&mut self.held) {
            let mut m = self.pending.per_ip.lock().unwrap();
            if let Some(n) = m.get_mut(&self.ip) {
                *n -= 1;
                if *n == 0 {
                    m.remove(&self.ip);
                }
            }
        }
    }
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        self.release();
    }
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Serve one TCP connection through the door.
pub async fn serve(socket: TcpStream, peer: SocketAddr, tls: Option<pgwire::tokio::TlsAcceptor>, shared: Arc<Shared>) {
    let Some(mut place) = shared.pending.admit(peer.ip()) else {
        super::conn::log("-", peer, "refused: too many connections waiting to authenticate");
        refuse(socket, "sorry, too many clients are logging in at once; try again in a moment").await;
        return;
    };
    let authed = Arc::new(AtomicBool::new(false));
    let notify = Arc::new(tokio::sync::Notify::new());
    let run = async {
        let (client, secure) = match tokio::time::timeout(AUTH_DEADLINE, negotiate(socket, tls)).await {
            Ok(Ok(Some(x))) => x,
            _ => return,
        };
        let Ok((ours, theirs)) = tokio::net::UnixStream::pair() else { return };
        let handlers = Arc::new(super::conn::Handlers::new(shared.clone(), peer, secure));
        let pg = tokio::spawn(async move {
            let _ = pgwire::tokio::process_socket_unix(theirs, handlers).await;
        });
        let (mut cr, mut cw) = tokio::io::split(client);
        let (mut sr, mut sw) = ours.into_split();
        let up = {
            let authed = authed.clone();
            async move {
                let _ = client_to_server(&mut cr, &mut sw, &authed).await;
                let _ = sw.shutdown().await;
            }
        };
        let down = {
            let (authed, notify) = (authed.clone(), notify.clone());
            async move {
                let _ = server_to_client(&mut sr, &mut cw, &authed, &notify).await;
                let _ = cw.shutdown().await;
            }
        };
        let deadline = {
            let (authed, notify) = (authed.clone(), notify.clone());
            async move {
                let _ = tokio::time::timeout(AUTH_DEADLINE, until_authed(&authed, &notify)).await;
                if !authed.load(Ordering::SeqCst) {
                    return;
                }
                std::future::pending::<()>().await
            }
        };
        // authenticated: give the pending place back while the connection goes on
        let watch = until_authed(&authed, &notify);
        tokio::pin!(up, down, deadline, watch);
        let mut released = false;
        loop {
            tokio::select! {
                _ = &mut up => break,
                _ = &mut down => break,
                _ = &mut deadline => break,
                _ = &mut watch, if !released => {
                    released = true;
                    place.release();
                }
            }
        }
        pg.abort();
    };
    run.await;
}

/// A FATAL 53300 ErrorResponse, then close (libpq shows it whether it sent a
/// startup packet or an SSLRequest).
async fn refuse(mut socket: TcpStream, message: &str) {
    let mut body = Vec::new();
    for (f, v) in [(b'S', "FATAL"), (b'V', "FATAL"), (b'C', "53300"), (b'M', message)] {
        body.push(f);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut msg = vec![b'E'];
    msg.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    msg.extend_from_slice(&body);
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let mut head = [0u8; 8];
        let _ = socket.read(&mut head).await;
        let _ = socket.write_all(&msg).await;
        let _ = socket.shutdown().await;
    })
    .await;
}

/// Until the server has sent AuthenticationOk.
async fn until_authed(authed: &AtomicBool, notify: &tokio::sync::Notify) {
    loop {
        // created before the check: a notification between the two is not lost
        let n = notify.notified();
        if authed.load(Ordering::SeqCst) {
            return;
        }
        n.await;
    }
}

/// SSLRequest / GSSENCRequest, then the client's stream (TLS or plain).
async fn negotiate(mut socket: TcpStream, tls: Option<pgwire::tokio::TlsAcceptor>) -> std::io::Result<Option<(Box<dyn Stream>, bool)>> {
    for _ in 0..2 {
        let mut head = [0u8; 8];
        let n = socket.peek(&mut head).await?;
        if n < 8 {
            // a short first packet: let pgwire read (and refuse) it
            if n == 0 {
                return Ok(None);
            }
            return Ok(Some((Box::new(socket), false)));
        }
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let code = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
        match (len, code) {
            (8, SSL_REQUEST) => {
                socket.read_exact(&mut head).await?;
                match &tls {
                    Some(acceptor) => {
                        socket.write_all(b"S").await?;
                        let stream = acceptor.accept(socket).await?;
                        return Ok(Some((Box::new(stream), true)));
                    }
                    None => socket.write_all(b"N").await?,
                }
            }
            (8, GSS_REQUEST) => {
                socket.read_exact(&mut head).await?;
                socket.write_all(b"N").await?;
            }
            _ => return Ok(Some((Box::new(socket), false))),
        }
    }
    Ok(Some((Box::new(socket), false)))
}

/// Frames of one direction: a length-prefixed packet without a type byte
/// first (the client's startup packet), then type byte + length.
struct Framer {
    startup: bool,
    header: Vec<u8>,
    /// Body bytes still to pass of the current message.
    body: usize,
}

impl Framer {
    fn new(startup: bool) -> Framer {
        Framer { startup, header: Vec::with_capacity(5), body: 0 }
    }

    /// Walk `buf`; call `on_header(type, length)` as each message header
    /// completes (type 0 for the startup packet) and, with `peek`, give the
    /// first bytes of a body. An `Err` ends the connection.
    fn feed(&mut self, buf: &[u8], mut on_header: impl FnMut(u8, usize, &[u8]) -> Result<(), String>) -> Result<(), String> {
        let mut i = 0;
        while i < buf.len() {
            if self.body > 0 {
                let take = self.body.min(buf.len() - i);
                self.body -= take;
                i += take;
                continue;
            }
            let need = if self.startup { 4 } else { 5 };
            let take = (need - self.header.len()).min(buf.len() - i);
            self.header.extend_from_slice(&buf[i..i + take]);
            i += take;
            if self.header.len() == need {
                let (ty, len_bytes) = if self.startup { (0u8, &self.header[0..4]) } else { (self.header[0], &self.header[1..5]) };
                let len = u32::from_be_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]) as usize;
                if len < 4 {
                    return Err(format!("a message of length {len}"));
                }
                on_header(ty, len, &buf[i..])?;
                self.body = len - 4;
                self.header.clear();
                self.startup = false;
            }
        }
        Ok(())
    }
}

async fn client_to_server<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(r: &mut R, w: &mut W, authed: &AtomicBool) -> std::io::Result<()> {
    let mut framer = Framer::new(true);
    let mut buf = vec![0u8; 64 << 10];
    let mut first = true;
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        let check = framer.feed(&buf[..n], |ty, len, _| {
            let ok = if ty == 0 {
                let ok = first && len <= MAX_STARTUP;
                first = false;
                ok
            } else if !authed.load(Ordering::SeqCst) {
                (ty == b'p' && len <= MAX_SASL) || (ty == b'X' && len == 4)
            } else {
                len <= MAX_MESSAGE
            };
            if ok { Ok(()) } else { Err(format!("message {:?} of {len} bytes", ty as char)) }
        });
        if check.is_err() {
            // a message the gateway does not take in this state: end the connection
            return Ok(());
        }
        w.write_all(&buf[..n]).await?;
    }
}

async fn server_to_client<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    r: &mut R,
    w: &mut W,
    authed: &AtomicBool,
    notify: &tokio::sync::Notify,
) -> std::io::Result<()> {
    let mut framer = Framer::new(false);
    let mut buf = vec![0u8; 64 << 10];
    // an AuthenticationOk header seen, its body (the code, 0) not yet complete
    let mut auth_header = false;
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        if !authed.load(Ordering::SeqCst) {
            let _ = framer.feed(&buf[..n], |ty, len, rest| {
                // 'R' with length 8 and code 0: AuthenticationOk
                if ty == b'R' && len == 8 {
                    if rest.len() >= 4 {
                        if rest[..4] == [0, 0, 0, 0] {
                            authed.store(true, Ordering::SeqCst);
                            notify.notify_waiters();
                        }
                    } else {
                        auth_header = true;
                    }
                }
                Ok(())
            });
            if auth_header {
                // rare: the code split across reads; the server sends AuthenticationOk
                // only after a successful SCRAM exchange, so its header suffices
                authed.store(true, Ordering::SeqCst);
                notify.notify_waiters();
            }
        }
        w.write_all(&buf[..n]).await?;
        w.flush().await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_framer_sees_every_header_across_any_split() {
        // startup (len 9: 4 + 5 bytes), then 'p' len 6, then 'Q' len 5
        let mut bytes = vec![0, 0, 0, 9, 1, 2, 3, 4, 5];
        bytes.extend([b'p', 0, 0, 0, 6, 9, 9]);
        bytes.extend([b'Q', 0, 0, 0, 5, 0]);
        for split in 1..bytes.len() {
            let mut f = Framer::new(true);
            let mut seen = Vec::new();
            for chunk in bytes.chunks(split) {
                f.feed(chunk, |ty, len, _| {
                    seen.push((ty, len));
                    Ok(())
                })
                .unwrap();
            }
            assert_eq!(seen, vec![(0, 9), (b'p', 6), (b'Q', 5)], "split {split}");
        }
        // a length below 4 is an error
        assert!(Framer::new(false).feed(&[b'Q', 0, 0, 0, 2], |_, _, _| Ok(())).is_err());
    }

    #[test]
    fn pending_places_are_limited_per_address_and_given_back() {
        let p = Pending::default();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let mut places: Vec<_> = (0..MAX_PENDING_PER_IP).map(|_| p.admit(ip).unwrap()).collect();
        assert!(p.admit(ip).is_none(), "one address may not hold more");
        assert!(p.admit("10.0.0.2".parse().unwrap()).is_some(), "another may");
        places.pop();
        assert!(p.admit(ip).is_some(), "a place given back is free again");
    }
}

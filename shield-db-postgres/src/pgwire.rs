//! `IDENTIFY_SYSTEM` over a physical replication connection: the one way to learn the timeline a
//! standby replays (PostgreSQL 15 has no SQL function for it; `pg_control_checkpoint()` lags until
//! the next restartpoint, and `pg_stat_wal_receiver` is empty while no WAL receiver runs).
//!
//! Written by hand on `postgres-protocol` because tokio-postgres cannot open a replication
//! connection (it has no way to send the `replication` startup parameter). Only what this needs:
//! startup, trust/password/MD5/SCRAM-SHA-256 authentication, one simple query, no TLS.

use std::time::Duration;

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::{md5_hash, sasl};
use postgres_protocol::message::{backend::Message, frontend};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What `IDENTIFY_SYSTEM` answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SystemId {
    /// The database system identifier.
    pub system_id: String,
    /// On a primary its timeline; on a standby the timeline it replays.
    pub timeline: u32,
}

/// Who connects, and where.
#[derive(Clone, Copy, Debug)]
pub struct Target<'a> {
    /// Host (an address; no name lookups needed for the local server).
    pub host: &'a str,
    /// Port.
    pub port: u16,
    /// A user with the REPLICATION attribute.
    pub user: &'a str,
    /// Its password (empty: none).
    pub password: &'a str,
}

/// Runs `IDENTIFY_SYSTEM` on the server at `t`, all within `timeout`.
pub async fn identify_system(t: Target<'_>, timeout: Duration) -> Result<SystemId, String> {
    tokio::time::timeout(timeout, run(t)).await.map_err(|_| "no answer in time".to_owned())?
}

async fn run(t: Target<'_>) -> Result<SystemId, String> {
    let mut conn =
        Conn { stream: TcpStream::connect((t.host, t.port)).await.map_err(|e| e.to_string())?, buf: BytesMut::new() };
    let mut out = BytesMut::new();
    frontend::startup_message([("user", t.user), ("database", "replication"), ("replication", "true")], &mut out)
        .map_err(|e| e.to_string())?;
    conn.send(&mut out).await?;
    conn.authenticate(t).await?;
    // Parameter statuses and the backend key come before the server is ready.
    loop {
        match conn.recv().await? {
            Message::ReadyForQuery(_) => break,
            Message::ErrorResponse(e) => return Err(error_text(&e)),
            _ => {}
        }
    }
    frontend::query("IDENTIFY_SYSTEM", &mut out).map_err(|e| e.to_string())?;
    conn.send(&mut out).await?;
    let mut row: Option<Vec<Option<String>>> = None;
    loop {
        match conn.recv().await? {
            Message::DataRow(body) => {
                let data = body.buffer();
                let cols = body
                    .ranges()
                    .map(|r| Ok(r.map(|r| String::from_utf8_lossy(&data[r]).into_owned())))
                    .collect()
                    .map_err(|e| e.to_string())?;
                row = Some(cols);
            }
            Message::ErrorResponse(e) => return Err(error_text(&e)),
            Message::ReadyForQuery(_) => break,
            _ => {}
        }
    }
    frontend::terminate(&mut out);
    let _ = conn.send(&mut out).await;
    let row = row.ok_or("IDENTIFY_SYSTEM returned no row")?;
    let col = |i: usize| row.get(i).cloned().flatten();
    let system_id = col(0).ok_or("IDENTIFY_SYSTEM: no systemid")?;
    let timeline = col(1).and_then(|t| t.parse().ok()).ok_or("IDENTIFY_SYSTEM: no timeline")?;
    Ok(SystemId { system_id, timeline })
}

struct Conn {
    stream: TcpStream,
    buf: BytesMut,
}

impl Conn {
    async fn send(&mut self, out: &mut BytesMut) -> Result<(), String> {
        self.stream.write_all(out).await.map_err(|e| e.to_string())?;
        out.clear();
        Ok(())
    }

    async fn recv(&mut self) -> Result<Message, String> {
        loop {
            if let Some(m) = Message::parse(&mut self.buf).map_err(|e| format!("protocol: {e}"))? {
                return Ok(m);
            }
            if self.stream.read_buf(&mut self.buf).await.map_err(|e| e.to_string())? == 0 {
                return Err("the server closed the connection".to_owned());
            }
        }
    }

    async fn authenticate(&mut self, t: Target<'_>) -> Result<(), String> {
        let mut out = BytesMut::new();
        let mut scram: Option<sasl::ScramSha256> = None;
        loop {
            match self.recv().await? {
                Message::AuthenticationOk => return Ok(()),
                Message::AuthenticationCleartextPassword => {
                    frontend::password_message(t.password.as_bytes(), &mut out).map_err(|e| e.to_string())?;
                }
                Message::AuthenticationMd5Password(b) => {
                    let hash = md5_hash(t.user.as_bytes(), t.password.as_bytes(), b.salt());
                    frontend::password_message(hash.as_bytes(), &mut out).map_err(|e| e.to_string())?;
                }
                Message::AuthenticationSasl(b) => {
                    let mut mechanisms = b.mechanisms();
                    let mut found = false;
                    while let Some(m) = mechanisms.next().map_err(|e| e.to_string())? {
                        found |= m == sasl::SCRAM_SHA_256;
                    }
                    if !found {
                        return Err("the server offers no SASL mechanism Shield speaks".to_owned());
                    }
                    let s = sasl::ScramSha256::new(t.password.as_bytes(), sasl::ChannelBinding::unsupported());
                    frontend::sasl_initial_response(sasl::SCRAM_SHA_256, s.message(), &mut out)
                        .map_err(|e| e.to_string())?;
                    scram = Some(s);
                }
                Message::AuthenticationSaslContinue(b) => {
                    let s = scram.as_mut().ok_or("SASL continue without a start")?;
                    s.update(b.data()).map_err(|e| format!("SCRAM: {e}"))?;
                    frontend::sasl_response(s.message(), &mut out).map_err(|e| e.to_string())?;
                }
                Message::AuthenticationSaslFinal(b) => {
                    let s = scram.as_mut().ok_or("SASL final without a start")?;
                    s.finish(b.data()).map_err(|e| format!("SCRAM: {e}"))?;
                    continue;
                }
                Message::ErrorResponse(e) => return Err(error_text(&e)),
                _ => return Err("an authentication method Shield does not speak".to_owned()),
            }
            self.send(&mut out).await?;
        }
    }
}

/// The server's message (`M` field), else whatever fields there are.
fn error_text(e: &postgres_protocol::message::backend::ErrorResponseBody) -> String {
    let mut fields = e.fields();
    let mut message = None;
    while let Ok(Some(f)) = fields.next() {
        if f.type_() == b'M' {
            message = Some(String::from_utf8_lossy(f.value_bytes()).into_owned());
        }
    }
    message.unwrap_or_else(|| "the server refused".to_owned())
}

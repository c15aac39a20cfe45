//! A hostile client against a live cluster's leader (issue 13, item 5): 2,000 concurrent slow
//! connections that never finish their headers, plus several clients flooding the leader's REST
//! port for 60 s with valid requests, malformed ones and unauthenticated unsafe ones. The leader
//! must keep its lock and keep taking writes (no failover, no fencing, no restart), and every
//! unauthenticated unsafe request must be refused (401, or 429 once its client is locked out).
//! The test prints the REST throughput it saw (docs/benchmarks.md records it).

#[path = "../../testkit/cluster.rs"]
mod cluster;
#[path = "../../testkit/servers.rs"]
mod servers;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cluster::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SLOW_CONNECTIONS: usize = 2_000;
const FLOOD: Duration = Duration::from_secs(60);
const FLOOD_CLIENTS: usize = 4;
/// What a node logs when it takes the leader lock.
const TOOK_LOCK: &str = "by acquiring session lock";

#[derive(Default)]
struct Counts {
    answered: AtomicU64,
    unsafe_refused: AtomicU64,
    unsafe_401: AtomicU64,
    unsafe_let_through: AtomicU64,
    malformed_sent: AtomicU64,
    no_answer: AtomicU64,
}

/// Raises this process's open-file limit: the slow connections alone need 2,000 descriptors.
fn raise_nofile() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("setrlimit");
    assert!(hard >= 4_096, "the test needs an open-file limit of at least 4096 (hard limit {hard})");
}

/// One slow client: connects, starts a request and sends a header byte every 2 s, forever;
/// reconnects whenever the server closes it.
async fn slow_client(port: u16, stop: Arc<AtomicBool>, open: Arc<AtomicU64>) {
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        open.fetch_add(1, Ordering::Relaxed);
        let _ = s.write_all(b"GET /patroni HTTP/1.1\r\nHost: leader\r\nX-Slow: ").await;
        while !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_secs(2)).await;
            if s.write_all(b"a").await.is_err() {
                break;
            }
        }
        open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Sends raw bytes and reads the status code of the answer, if any.
async fn raw(port: u16, request: &[u8]) -> Option<u16> {
    let run = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        s.write_all(request).await.ok()?;
        let mut buf = vec![0u8; 512];
        let n = s.read(&mut buf).await.ok()?;
        let head = String::from_utf8_lossy(&buf[..n]).into_owned();
        head.split_whitespace().nth(1)?.parse().ok()
    };
    tokio::time::timeout(Duration::from_secs(5), run).await.ok().flatten()
}

async fn flood_client(i: usize, port: u16, until: Instant, counts: Arc<Counts>) {
    let mut k = 0usize;
    while Instant::now() < until {
        k += 1;
        let (req, unsafe_req): (Vec<u8>, bool) = match (k + i) % 6 {
            0 => (b"GET /patroni HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(), false),
            1 => (b"GET /primary HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(), false),
            2 => {
                let body = r#"{"leader":"node1","candidate":"node2"}"#;
                let r = format!(
                    "POST /switchover HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                (r.into_bytes(), true)
            }
            3 => (
                b"POST /reinitialize HTTP/1.1\r\nHost: x\r\nAuthorization: Basic c2hpZWxkOmd1ZXNz\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_vec(),
                true,
            ),
            4 => {
                counts.malformed_sent.fetch_add(1, Ordering::Relaxed);
                (b"\x16\x03\x01garbage \xff\xfe\r\n\r\n".to_vec(), false)
            }
            _ => {
                counts.malformed_sent.fetch_add(1, Ordering::Relaxed);
                let r = "PATCH /config HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\nConnection: close\r\n\r\n{";
                (r.as_bytes().to_vec(), true)
            }
        };
        match raw(port, &req).await {
            Some(code) => {
                counts.answered.fetch_add(1, Ordering::Relaxed);
                if unsafe_req {
                    match code {
                        401 => {
                            counts.unsafe_401.fetch_add(1, Ordering::Relaxed);
                            counts.unsafe_refused.fetch_add(1, Ordering::Relaxed);
                        }
                        429 => {
                            counts.unsafe_refused.fetch_add(1, Ordering::Relaxed);
                        }
                        // A body over the limit or malformed (refused by the HTTP layer).
                        400 | 408 | 413 => {}
                        _ => {
                            counts.unsafe_let_through.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
            None => {
                counts.no_answer.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_client_cannot_move_the_leader() {
    let Some(c) = cluster().await else { return };
    raise_nofile();
    let p = c.primary;
    let leader_port = c.nodes[p].api_port;
    let pg_port = c.nodes[p].pg_port;
    let postmaster = c.nodes[p].postmaster_pid();
    exec(pg_port, "CREATE TABLE IF NOT EXISTS hostile (id bigserial primary key, at timestamptz default now())")
        .await
        .expect("table");

    let took_before: Vec<usize> = c.nodes.iter().map(|n| n.log().matches(TOOK_LOCK).count()).collect();
    // Throughput first, with no slow clients: what the flooders get answered while the leader
    // renews (the checks below cover this phase too).
    let plain = Arc::new(Counts::default());
    let t0 = Instant::now();
    let warm: Vec<_> = (0..FLOOD_CLIENTS)
        .map(|i| tokio::spawn(flood_client(i, leader_port, t0 + Duration::from_secs(15), plain.clone())))
        .collect();
    for f in warm {
        f.await.expect("flood client");
    }
    println!(
        "hostile: REST throughput without slow clients: {:.0} answers/s from {FLOOD_CLIENTS} clients \
         (one request per connection; {} unanswered)",
        plain.answered.load(Ordering::Relaxed) as f64 / t0.elapsed().as_secs_f64(),
        plain.no_answer.load(Ordering::Relaxed)
    );
    assert_eq!(plain.unsafe_let_through.load(Ordering::Relaxed), 0, "an unauthenticated unsafe request got through");
    let stop = Arc::new(AtomicBool::new(false));
    let open = Arc::new(AtomicU64::new(0));
    let mut slow = Vec::new();
    for _ in 0..SLOW_CONNECTIONS {
        slow.push(tokio::spawn(slow_client(leader_port, stop.clone(), open.clone())));
    }
    // The writer: one insert every 100 ms on the leader, each within 2 s.
    let writes = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
    let writer = {
        let (stop, writes) = (stop.clone(), writes.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let ok =
                    tokio::time::timeout(Duration::from_secs(2), exec(pg_port, "INSERT INTO hostile DEFAULT VALUES"))
                        .await
                        .is_ok_and(|r| r.is_ok());
                if ok { &writes.0 } else { &writes.1 }.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let counts = Arc::new(Counts::default());
    let started = Instant::now();
    let until = started + FLOOD;
    let flood: Vec<_> =
        (0..FLOOD_CLIENTS).map(|i| tokio::spawn(flood_client(i, leader_port, until, counts.clone()))).collect();
    let mut peak_open = 0;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_secs(1)).await;
        peak_open = peak_open.max(open.load(Ordering::Relaxed));
    }
    for f in flood {
        f.await.expect("flood client");
    }
    stop.store(true, Ordering::Relaxed);
    for s in slow {
        s.abort();
    }
    writer.await.expect("writer");
    let secs = started.elapsed().as_secs_f64();

    let (ok_writes, failed_writes) = (writes.0.load(Ordering::Relaxed), writes.1.load(Ordering::Relaxed));
    let answered = counts.answered.load(Ordering::Relaxed);
    println!(
        "hostile: {SLOW_CONNECTIONS} slow clients (peak {peak_open} open at once), {FLOOD_CLIENTS} flooders for {secs:.0} s: \
         {answered} answers ({:.0}/s), {} unsafe refused ({} with 401), {} unanswered, {} malformed sent; \
         writes {ok_writes} ok, {failed_writes} failed",
        answered as f64 / secs,
        counts.unsafe_refused.load(Ordering::Relaxed),
        counts.unsafe_401.load(Ordering::Relaxed),
        counts.no_answer.load(Ordering::Relaxed),
        counts.malformed_sent.load(Ordering::Relaxed),
    );
    assert!(peak_open >= 1_000, "the slow clients held too few connections ({peak_open}) to test anything");
    assert_eq!(counts.unsafe_let_through.load(Ordering::Relaxed), 0, "an unauthenticated unsafe request got through");
    assert!(counts.unsafe_401.load(Ordering::Relaxed) > 0, "no unsafe request was refused with 401");
    assert!(answered > 0, "the flood got no answer at all");
    assert_eq!(failed_writes, 0, "the leader stopped taking writes ({ok_writes} ok)");
    assert!(ok_writes > 300, "too few writes went through ({ok_writes})");
    // Still the leader, same postmaster, and the lock never moved.
    assert_eq!(c.nodes[p].postmaster_pid(), postmaster, "the leader's PostgreSQL was restarted");
    let (code, status) = http_get(leader_port, "/patroni").await;
    assert_eq!(code, 200, "{status}");
    let v: serde_json::Value = serde_json::from_str(&status).expect("status JSON");
    assert_eq!(v["role"], "primary", "{status}");
    let after: Vec<usize> = c.nodes.iter().map(|n| n.log().matches(TOOK_LOCK).count()).collect();
    assert_eq!(after, took_before, "a node took the leader lock during the flood (takes per node)");
    let log = c.nodes[p].log();
    assert!(log.contains("REST API: request refused"), "refusals are logged");
}

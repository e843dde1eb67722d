//! DNS for mail: the resolver setup shared by MX lookup (outbound) and
//! the SPF, DKIM and DMARC checks (inbound), and a small authoritative
//! server answering from a fixed table, which tests and benchmarks point
//! the resolver at instead of the Internet.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::proto::op::{Edns, Message, MessageType, ResponseCode};
use hickory_resolver::proto::rr::rdata::{A, AAAA, MX, SOA, TXT};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

/// The resolver configuration: `nameserver` (UDP and TCP) when given,
/// else the system's (`/etc/resolv.conf`). Lookups give up after 3 s and
/// one retry, so a dead resolver delays a transaction by seconds, not
/// minutes; EDNS0 lets DKIM keys (longer than 512 bytes) come over UDP.
pub fn resolver_config(
    nameserver: Option<SocketAddr>,
) -> Result<(ResolverConfig, ResolverOpts), String> {
    let (config, mut opts) = match nameserver {
        Some(addr) => {
            let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
            for c in &mut ns.connections {
                c.port = addr.port();
            }
            let mut opts = ResolverOpts::default();
            opts.cache_size = 1024;
            (ResolverConfig::from_name_servers(vec![ns]), opts)
        }
        None => hickory_resolver::system_conf::read_system_conf().map_err(|e| e.to_string())?,
    };
    opts.timeout = Duration::from_secs(3);
    opts.attempts = 2;
    opts.edns0 = true;
    Ok((config, opts))
}

/// One record the fixture server answers with.
#[derive(Debug, Clone)]
pub enum FixtureRecord {
    /// A TXT record (split into 255-byte strings as DNS requires).
    Txt(String),
    /// An IPv4 or IPv6 address (A or AAAA).
    Ip(IpAddr),
    /// A mail exchanger with its preference.
    Mx(u16, String),
}

/// An authoritative DNS server on loopback answering from a fixed table
/// (UDP and TCP on the same port); unknown names get NXDOMAIN.
#[derive(Debug)]
pub struct FixtureDns {
    /// Where it listens.
    pub addr: SocketAddr,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for FixtureDns {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

type Table = HashMap<String, Vec<FixtureRecord>>;

fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl FixtureDns {
    /// Starts serving `records` (name → records) on a free loopback port.
    pub async fn start(records: Vec<(String, FixtureRecord)>) -> std::io::Result<FixtureDns> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), records).await
    }

    /// Starts serving `records` on `addr` (port 0: a free one).
    pub async fn start_on(
        addr: SocketAddr,
        records: Vec<(String, FixtureRecord)>,
    ) -> std::io::Result<FixtureDns> {
        let mut table = Table::new();
        for (name, r) in records {
            table.entry(key(&name)).or_default().push(r);
        }
        let table = Arc::new(table);
        let tcp = TcpListener::bind(addr).await?;
        let addr = tcp.local_addr()?;
        let udp = UdpSocket::bind(addr).await?;
        let t = Arc::clone(&table);
        let udp_task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok((n, from)) = udp.recv_from(&mut buf).await {
                if let Some(out) = answer(&t, &buf[..n], true) {
                    let _ = udp.send_to(&out, from).await;
                }
            }
        });
        let tcp_task = tokio::spawn(async move {
            while let Ok((mut s, _)) = tcp.accept().await {
                let t = Arc::clone(&table);
                tokio::spawn(async move {
                    loop {
                        let Ok(len) = s.read_u16().await else { return };
                        let mut q = vec![0u8; len as usize];
                        if s.read_exact(&mut q).await.is_err() {
                            return;
                        }
                        let Some(out) = answer(&t, &q, false) else {
                            return;
                        };
                        let Ok(len) = u16::try_from(out.len()) else {
                            return;
                        };
                        if s.write_u16(len).await.is_err() || s.write_all(&out).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Ok(FixtureDns {
            addr,
            tasks: vec![udp_task, tcp_task],
        })
    }
}

fn rdata(r: &FixtureRecord, qtype: RecordType) -> Option<RData> {
    match (r, qtype) {
        (FixtureRecord::Txt(text), RecordType::TXT) => {
            let parts = text
                .as_bytes()
                .chunks(255)
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect();
            Some(RData::TXT(TXT::new(parts)))
        }
        (FixtureRecord::Ip(IpAddr::V4(ip)), RecordType::A) => Some(RData::A(A(*ip))),
        (FixtureRecord::Ip(IpAddr::V6(ip)), RecordType::AAAA) => Some(RData::AAAA(AAAA(*ip))),
        (FixtureRecord::Mx(pref, host), RecordType::MX) => {
            Some(RData::MX(MX::new(*pref, Name::from_ascii(host).ok()?)))
        }
        _ => None,
    }
}

/// The response to one query, or `None` for what is not a query.
fn answer(table: &Table, query: &[u8], udp: bool) -> Option<Vec<u8>> {
    let q = Message::from_vec(query).ok()?;
    if q.metadata.message_type != MessageType::Query {
        return None;
    }
    let mut m = Message::response(q.metadata.id, q.metadata.op_code);
    m.metadata.authoritative = true;
    m.metadata.recursion_desired = q.metadata.recursion_desired;
    let limit = match (&q.edns, udp) {
        (_, false) => usize::from(u16::MAX),
        (Some(e), true) => usize::from(e.max_payload().max(512)),
        (None, true) => 512,
    };
    if q.edns.is_some() {
        let mut e = Edns::new();
        e.set_max_payload(4096);
        m.edns = Some(e);
    }
    let mut known = false;
    let mut answered = false;
    for question in &q.queries {
        m.add_query(question.clone());
        let name = key(&question.name().to_ascii());
        if let Some(records) = table.get(&name) {
            known = true;
            for r in records {
                if let Some(data) = rdata(r, question.query_type()) {
                    m.add_answer(Record::from_rdata(question.name().clone(), 60, data));
                    answered = true;
                }
            }
        }
    }
    if !known {
        m.metadata.response_code = ResponseCode::NXDomain;
    }
    if !answered && let Some(question) = q.queries.first() {
        // A negative answer carries the zone's SOA, whose minimum says how
        // long resolvers may remember it (RFC 2308), as real servers do.
        let soa = SOA::new(
            Name::from_ascii("ns.fixture.").unwrap_or_else(|_| Name::root()),
            Name::from_ascii("hostmaster.fixture.").unwrap_or_else(|_| Name::root()),
            1,
            3600,
            600,
            86400,
            60,
        );
        m.add_authority(Record::from_rdata(
            question.name().clone(),
            60,
            RData::SOA(soa),
        ));
    }
    let out = m.to_vec().ok()?;
    if out.len() > limit {
        // Too long for this UDP query: say so and let it ask over TCP.
        let mut t = Message::response(q.metadata.id, q.metadata.op_code);
        t.metadata.truncation = true;
        for question in &q.queries {
            t.add_query(question.clone());
        }
        return t.to_vec().ok();
    }
    Some(out)
}

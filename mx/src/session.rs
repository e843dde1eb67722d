//! The SMTP state machine of one connection (RFC 5321 §4.1.4): greeting,
//! envelope, message, delivery over the link. No sockets here: the server
//! feeds it command lines and message bytes, and writes what it returns.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use cofre_storage::admin::{AdminOp, AdminReply, DeliveryRules};
use cofre_storage::link::route::Router;
use cofre_storage::link::ws::ClientError;
use cofre_storage::link::{ErrorCode, Op, Reply};
use cofre_storage::mailbox::AppendOptions;
use cofre_storage::primary::SessionId;
use cofre_storage::throttle::LoginLimiter;
use cofre_storage::webhook::WebhookTarget;
use cofre_storage::{AliasAddress, Keyword, Password, Role};
use sha2::{Digest, Sha256};

use crate::outbound::Sender;
use crate::parse::{self, Command, MailParams};

/// What a mail exchanger accepts.
#[derive(Debug, Clone)]
pub struct Config {
    /// The name this server gives in its greeting and `Received` headers.
    pub hostname: String,
    /// Largest message accepted, in octets (advertised with SIZE).
    pub max_message_size: u64,
    /// Most recipients in one transaction (RFC 5321 asks for at least 100).
    pub max_recipients: usize,
    /// Whether STARTTLS is offered (a certificate is configured and the
    /// connection is not TLS yet).
    pub starttls: bool,
    /// `Some` for the submission service (ports 587 and 465): AUTH is
    /// required, the sender must be the authenticated alias, any
    /// recipient is taken, and a copy goes into the sender's Sent folder.
    pub submission: Option<Submission>,
    /// The rules of the aliases this service delivers to (keep a copy,
    /// forwards, webhooks) and, on the MX, bounces to forwarded mail;
    /// without it, only the mailbox gets a copy and SRS addresses are
    /// unknown recipients.
    pub forwarding: Option<Forwarding>,
    /// SPF, DKIM, ARC and DMARC checks of arriving mail (an
    /// `Authentication-Results` header on every copy, a 550 when the
    /// author domain's DMARC policy says reject) and ARC seals on
    /// forwarded copies. `None`: nothing is checked or sealed.
    pub auth: Option<Arc<crate::auth::MailAuth>>,
}

/// What forwarding needs: the outbound queue and the SRS key.
#[derive(Clone)]
pub struct Forwarding {
    /// Where forwarded copies and returned bounces go.
    pub outbound: Arc<Sender>,
    /// Envelope sender rewriting.
    pub srs: crate::srs::Srs,
}

impl std::fmt::Debug for Forwarding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarding").finish_non_exhaustive()
    }
}

/// What the submission service needs beyond the MX.
#[derive(Clone)]
pub struct Submission {
    /// Where mail for other servers goes.
    pub outbound: Arc<Sender>,
    /// Failed-login throttling, shared with the other front ends.
    pub limiter: Arc<LoginLimiter>,
    /// AUTH without TLS (loopback only).
    pub plain_auth: bool,
    /// The pause after a failed AUTH.
    pub failed_login_delay: std::time::Duration,
}

impl std::fmt::Debug for Submission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Submission")
            .field("plain_auth", &self.plain_auth)
            .finish_non_exhaustive()
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            hostname: "localhost".into(),
            max_message_size: 50 * 1024 * 1024,
            max_recipients: 100,
            starttls: true,
            submission: None,
            forwarding: None,
            auth: None,
        }
    }
}

/// Submission for other front ends (JMAP): [`Session::submit_for`]
/// behind the storage crate's [`Submit`](cofre_storage::outbound::Submit).
#[derive(Debug)]
pub struct Submitter {
    /// The link to the primaries.
    pub router: Arc<Router>,
    /// A submission service's settings (its `submission` must be set).
    pub config: Arc<Config>,
}

impl cofre_storage::outbound::Submit for Submitter {
    fn submit<'a>(
        &'a self,
        alias: &'a AliasAddress,
        session: SessionId,
        mail_from: &'a str,
        rcpts: &'a [String],
        raw: &'a [u8],
    ) -> cofre_storage::outbound::SubmitFuture<'a> {
        Box::pin(Session::submit_for(
            Arc::clone(&self.router),
            Arc::clone(&self.config),
            "HTTP",
            alias.clone(),
            session,
            mail_from.to_string(),
            rcpts.to_vec(),
            raw,
        ))
    }
}

/// What the server does after a command.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Write the reply and read the next command.
    Reply(String),
    /// Write the reply (354) and read a message up to `<CRLF>.<CRLF>`, then
    /// give it to [`Session::message`].
    ReadData(String),
    /// Read exactly `size` octets, then give them to [`Session::chunk`].
    ReadChunk {
        /// Octets to read.
        size: u64,
        /// Whether this is the last chunk.
        last: bool,
    },
    /// Write the reply, then start TLS and reset the session.
    StartTls(String),
    /// Write the reply (a 334 challenge), read one line and give it to
    /// [`Session::auth_line`].
    AuthContinue(String),
    /// Write the reply and close the connection.
    Close(String),
}

/// Where a multi-step AUTH stands.
#[derive(Debug)]
enum Sasl {
    /// PLAIN without an initial response: the response comes next.
    Plain,
    /// LOGIN: the user name comes next.
    LoginUser,
    /// LOGIN: the password comes next.
    LoginPassword(String),
}

/// An envelope being built.
#[derive(Debug)]
struct Envelope {
    from: String,
    params: MailParams,
    rcpts: Vec<String>,
    /// Original senders of forwarded mail that a bounce (sent to our SRS
    /// address) goes back to.
    returns: Vec<String>,
    /// BDAT chunks received so far.
    chunks: Vec<u8>,
    /// A BDAT chunk pushed the message over the limit: the rest is read
    /// and dropped, and the last chunk is answered with this.
    chunk_error: Option<String>,
}

/// One connection's SMTP session.
pub struct Session {
    router: Arc<Router>,
    config: Arc<Config>,
    peer: SocketAddr,
    tls: bool,
    /// The EHLO/HELO name, and whether it was EHLO.
    helo: Option<(String, bool)>,
    envelope: Option<Envelope>,
    /// Submission: the authenticated alias and its session.
    auth: Option<(AliasAddress, SessionId)>,
    sasl: Option<Sasl>,
    /// Submission through another front end (JMAP): named in `Received`;
    /// no copy into Sent (that client files its own).
    via: Option<&'static str>,
}

fn reply(code: u16, status: &str, text: &str) -> String {
    format!("{code} {status} {text}\r\n")
}

/// A process-unique id for a transaction, for logs and `Received`.
fn transaction_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0);
    format!("{:X}{:04X}", now, n & 0xffff)
}

impl Session {
    /// A session for a connection from `peer`; `tls` when it is already
    /// encrypted (implicit TLS, or after STARTTLS).
    pub fn new(router: Arc<Router>, config: Arc<Config>, peer: SocketAddr, tls: bool) -> Session {
        Session {
            router,
            config,
            peer,
            tls,
            helo: None,
            envelope: None,
            auth: None,
            sasl: None,
            via: None,
        }
    }

    /// Submits a message for an alias logged in through another front end
    /// (JMAP `EmailSubmission`, named by `via` in the `Received` header):
    /// the submission service's path — DKIM signing, our recipients'
    /// mailboxes and rules, the outbound queue for the others — without a
    /// copy into Sent. The SMTP reply: `2xx` when every copy is durable or
    /// queued.
    #[allow(clippy::too_many_arguments)]
    pub async fn submit_for(
        router: Arc<Router>,
        config: Arc<Config>,
        via: &'static str,
        alias: AliasAddress,
        session: SessionId,
        mail_from: String,
        rcpts: Vec<String>,
        raw: &[u8],
    ) -> String {
        if config.submission.is_none() {
            return reply(554, "5.3.0", "This service does not submit mail");
        }
        let peer = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut s = Session::new(router, config, peer, true);
        s.auth = Some((alias, session));
        s.via = Some(via);
        let env = Envelope {
            from: mail_from,
            params: MailParams::default(),
            rcpts,
            returns: Vec::new(),
            chunks: Vec::new(),
            chunk_error: None,
        };
        s.deliver(env, raw).await
    }

    /// Ends the session's link session, if AUTH opened one.
    pub async fn close(&mut self) {
        if let Some((address, session)) = self.auth.take() {
            let _ = self.router.request(&address, Op::Logout { session }).await;
        }
    }

    /// The greeting sent when the connection opens.
    pub fn greeting(&self) -> String {
        format!("220 {} ESMTP Cofre\r\n", self.config.hostname)
    }

    /// Whether a transaction has begun (MAIL accepted, not yet finished).
    pub fn in_transaction(&self) -> bool {
        self.envelope.is_some()
    }

    fn ehlo_reply(&self, name: &str) -> String {
        let mut lines = vec![
            format!("{} Hello {name} [{}]", self.config.hostname, self.peer.ip()),
            "PIPELINING".into(),
            format!("SIZE {}", self.config.max_message_size),
            "8BITMIME".into(),
            "SMTPUTF8".into(),
            "ENHANCEDSTATUSCODES".into(),
            "CHUNKING".into(),
        ];
        if self.config.starttls && !self.tls {
            lines.push("STARTTLS".into());
        }
        if let Some(sub) = &self.config.submission
            && (self.tls || sub.plain_auth)
        {
            lines.push("AUTH PLAIN LOGIN".into());
        }
        let last = lines.len() - 1;
        let mut out = String::new();
        for (i, l) in lines.iter().enumerate() {
            out.push_str(&format!("250{}{l}\r\n", if i == last { ' ' } else { '-' }));
        }
        out
    }

    /// Handles one command line (without CRLF).
    pub async fn command(&mut self, line: &[u8]) -> Next {
        let cmd = match parse::command(line) {
            Ok(c) => c,
            Err(r) => return Next::Reply(format!("{r}\r\n")),
        };
        match cmd {
            Command::Ehlo(name) => {
                let r = self.ehlo_reply(&name);
                self.helo = Some((name, true));
                self.envelope = None;
                Next::Reply(r)
            }
            Command::Helo(name) => {
                let r = format!("250 {} Hello {name}\r\n", self.config.hostname);
                self.helo = Some((name, false));
                self.envelope = None;
                Next::Reply(r)
            }
            Command::Mail { from, params } => Next::Reply(self.mail(from, params)),
            Command::Rcpt { to } => Next::Reply(self.rcpt(&to).await),
            Command::Data => self.data(),
            Command::Bdat { size, last } => Next::ReadChunk { size, last },
            Command::Rset => {
                self.envelope = None;
                Next::Reply(reply(250, "2.0.0", "Ok"))
            }
            Command::Noop => Next::Reply(reply(250, "2.0.0", "Ok")),
            Command::Quit => Next::Close(format!(
                "221 2.0.0 {} closing connection\r\n",
                self.config.hostname
            )),
            Command::Vrfy => Next::Reply(reply(
                252,
                "2.5.0",
                "Cannot verify; send mail and it will be delivered if the address exists",
            )),
            Command::Help => Next::Reply(reply(
                214,
                "2.0.0",
                "Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT STARTTLS",
            )),
            Command::StartTls => {
                if self.tls || !self.config.starttls {
                    Next::Reply(reply(502, "5.5.1", "STARTTLS not available"))
                } else if self.envelope.is_some() {
                    Next::Reply(reply(503, "5.5.1", "STARTTLS not inside a transaction"))
                } else {
                    Next::StartTls(reply(220, "2.0.0", "Ready to start TLS"))
                }
            }
            Command::Auth { mechanism, initial } => self.auth(&mechanism, initial).await,
        }
    }

    /// After TLS is up: the session starts over (RFC 3207 §4.2).
    pub fn tls_started(&mut self) {
        self.tls = true;
        self.helo = None;
        self.envelope = None;
    }

    fn mail(&mut self, from: String, params: MailParams) -> String {
        if self.helo.is_none() {
            return reply(503, "5.5.1", "Say EHLO first");
        }
        if self.envelope.is_some() {
            return reply(503, "5.5.1", "Nested MAIL command");
        }
        if !from.is_ascii() && !params.smtputf8 {
            return reply(
                553,
                "5.6.7",
                "Non-ASCII sender needs the SMTPUTF8 parameter",
            );
        }
        if self.config.submission.is_some() {
            let Some((me, _)) = &self.auth else {
                return reply(530, "5.7.0", "Authentication required");
            };
            if AliasAddress::try_from(from.as_str()).ok().as_ref() != Some(me) {
                return reply(
                    553,
                    "5.7.1",
                    &format!("Sender address rejected: send as <{me}>"),
                );
            }
        }
        if params
            .size
            .is_some_and(|s| s > self.config.max_message_size)
        {
            return reply(
                552,
                "5.3.4",
                &format!(
                    "Message too large: at most {} octets",
                    self.config.max_message_size
                ),
            );
        }
        self.envelope = Some(Envelope {
            from,
            params,
            rcpts: Vec::new(),
            returns: Vec::new(),
            chunks: Vec::new(),
            chunk_error: None,
        });
        reply(250, "2.1.0", "Sender ok")
    }

    async fn rcpt(&mut self, to: &str) -> String {
        let Some(env) = &self.envelope else {
            return reply(503, "5.5.1", "Need MAIL before RCPT");
        };
        if !to.is_ascii() && !env.params.smtputf8 {
            return reply(
                553,
                "5.6.7",
                "Non-ASCII recipient needs the SMTPUTF8 parameter",
            );
        }
        if env.rcpts.len() >= self.config.max_recipients {
            return reply(452, "4.5.3", "Too many recipients");
        }
        if self.config.submission.is_some() {
            // Ours or not is decided at delivery; syntax was checked.
            let to = to.to_string();
            if let Some(env) = &mut self.envelope
                && !env.rcpts.contains(&to)
            {
                env.rcpts.push(to);
            }
            return reply(250, "2.1.5", "Recipient ok");
        }
        // An address that is not a valid alias cannot be ours: the same
        // answer as for an unknown alias, so nobody can tell them apart.
        let unknown = || reply(550, "5.1.1", "No such mailbox here");
        if let Some(original) = self
            .config
            .forwarding
            .as_ref()
            .and_then(|f| f.srs.reverse(to))
        {
            // A bounce (or reply) to mail we forwarded: it goes back.
            if let Some(env) = &mut self.envelope
                && !env.returns.contains(&original)
            {
                env.returns.push(original);
            }
            return reply(250, "2.1.5", "Recipient ok");
        }
        let Ok(address) = AliasAddress::try_from(to) else {
            return unknown();
        };
        let found = self
            .router
            .request(
                &address,
                Op::Locate {
                    address: address.clone(),
                },
            )
            .await;
        match found {
            Ok(Reply::Holds(true)) => {}
            Ok(_) => return unknown(),
            Err(ClientError::Remote(e)) if e.code == ErrorCode::NotFound => return unknown(),
            Err(e) => {
                tracing::warn!(error = %e, "recipient lookup failed");
                return reply(
                    451,
                    "4.4.3",
                    "Cannot check the recipient now; try again later",
                );
            }
        }
        let address = address.to_string();
        if let Some(env) = &mut self.envelope
            && !env.rcpts.contains(&address)
        {
            env.rcpts.push(address);
        }
        reply(250, "2.1.5", "Recipient ok")
    }

    fn data(&mut self) -> Next {
        match &self.envelope {
            None => Next::Reply(reply(503, "5.5.1", "Need MAIL before DATA")),
            Some(e) if e.rcpts.is_empty() && e.returns.is_empty() => {
                Next::Reply(reply(554, "5.5.1", "No valid recipients"))
            }
            Some(e) if !e.chunks.is_empty() => {
                Next::Reply(reply(503, "5.5.1", "DATA after BDAT is not allowed"))
            }
            Some(_) => Next::ReadData(reply(354, "2.0.0", "End data with <CR><LF>.<CR><LF>")),
        }
    }

    /// The message of a DATA command, unstuffed; `too_large` when it went
    /// past the limit (what was read is not all of it).
    pub async fn message(&mut self, raw: &[u8], too_large: bool) -> String {
        let Some(env) = self.envelope.take() else {
            return reply(503, "5.5.1", "No transaction");
        };
        if too_large {
            return self.too_large();
        }
        self.deliver(env, raw).await
    }

    /// One BDAT chunk: its bytes, or `None` when the server dropped them
    /// because [`chunk_fits`](Self::chunk_fits) said no.
    pub async fn chunk(&mut self, bytes: Option<Vec<u8>>, last: bool) -> String {
        let too_large = self.too_large();
        let Some(env) = &mut self.envelope else {
            return reply(503, "5.5.1", "Need MAIL before BDAT");
        };
        if env.rcpts.is_empty() && env.returns.is_empty() {
            self.envelope = None;
            return reply(554, "5.5.1", "No valid recipients");
        }
        let size = bytes.as_ref().map_or(0, Vec::len);
        match bytes {
            Some(b) if env.chunk_error.is_none() => env.chunks.extend_from_slice(&b),
            Some(_) => {}
            None => {
                env.chunk_error = Some(too_large);
                env.chunks = Vec::new();
            }
        }
        if !last {
            return match &env.chunk_error {
                Some(e) => e.clone(),
                None => reply(250, "2.0.0", &format!("{size} octets received")),
            };
        }
        let Some(mut env) = self.envelope.take() else {
            return reply(503, "5.5.1", "No transaction");
        };
        if let Some(e) = env.chunk_error.take() {
            return e;
        }
        let raw = std::mem::take(&mut env.chunks);
        self.deliver(env, &raw).await
    }

    /// Whether a BDAT chunk of this size can be taken (in a transaction,
    /// and within the size limit); the server drops a chunk that cannot.
    pub fn chunk_fits(&self, size: u64) -> bool {
        self.envelope.as_ref().is_some_and(|e| {
            e.chunk_error.is_none() && e.chunks.len() as u64 + size <= self.config.max_message_size
        })
    }

    fn too_large(&self) -> String {
        reply(
            552,
            "5.3.4",
            &format!(
                "Message too large: at most {} octets",
                self.config.max_message_size
            ),
        )
    }

    fn received(&self, env: &Envelope, id: &str) -> String {
        let (helo, ehlo) = self
            .helo
            .clone()
            .unwrap_or_else(|| ("unknown".into(), false));
        let mut with = match (env.params.smtputf8, ehlo) {
            (true, _) => "UTF8SMTP".to_string(),
            (false, true) => "ESMTP".to_string(),
            (false, false) => "SMTP".to_string(),
        };
        if let Some(via) = self.via {
            with = via.to_string();
        } else {
            if self.tls {
                with.push('S');
            }
            if self.auth.is_some() {
                with.push('A');
            }
        }
        let helo: String = helo
            .chars()
            .filter(|c| !c.is_control() && *c != '(' && *c != ')')
            .take(255)
            .collect();
        // Mail from another front end has no SMTP client to name.
        let from = match self.via {
            Some(_) => String::new(),
            None => format!("from {helo} ([{}])\r\n\t", self.peer.ip()),
        };
        let mut out = format!(
            "Received: {from}by {} (Cofre) with {with} id {id}",
            self.config.hostname
        );
        if let [only] = env.rcpts.as_slice() {
            out.push_str(&format!("\r\n\tfor <{only}>"));
        }
        out.push_str(&format!("; {}\r\n", rfc5322_now()));
        out
    }

    fn helo_name(&self) -> &str {
        self.helo.as_ref().map_or("unknown", |(h, _)| h.as_str())
    }

    /// Delivers to every recipient; 250 only when every copy is durable.
    async fn deliver(&self, env: Envelope, raw: &[u8]) -> String {
        let id = transaction_id();
        let header = self.received(&env, &id);
        let mut stamped = Vec::with_capacity(header.len() + raw.len());
        if let Some(sub) = &self.config.submission {
            stamped.extend_from_slice(header.as_bytes());
            stamped.extend_from_slice(raw);
            return self.submit(sub, env, &stamped, raw, &id).await;
        }
        let mut raw = raw;
        let unforged;
        if let Some(auth) = &self.config.auth {
            // Results claiming to be ours did not come from us (RFC 8601 §5).
            unforged = crate::auth::strip_results(raw, auth.hostname());
            raw = &unforged;
            let verdict = auth
                .check(raw, self.peer.ip(), self.helo_name(), &env.from)
                .await;
            if let Some(reason) = verdict.reject {
                tracing::info!(id, from = %env.from, "refused by DMARC policy");
                return reply(550, "5.7.1", &reason);
            }
            stamped.extend_from_slice(verdict.header.as_bytes());
        }
        stamped.extend_from_slice(header.as_bytes());
        stamped.extend_from_slice(raw);
        if !env.returns.is_empty()
            && let Some(fwd) = &self.config.forwarding
            && let Err(e) = fwd.outbound.enqueue("", &env.returns, &stamped).await
        {
            tracing::error!(error = %e, "queueing a returned bounce failed");
            return reply(
                451,
                "4.3.0",
                "Cannot queue the message now; try again later",
            );
        }
        if env.rcpts.is_empty() {
            return reply(250, "2.0.0", &format!("Ok: returned as {id}"));
        }
        self.deliver_local(&env.rcpts, &stamped, raw, &id, &env.from)
            .await
    }

    /// Stores a copy for each of our aliases among `rcpts`; the reply.
    async fn deliver_local(
        &self,
        rcpts: &[String],
        stamped: &[u8],
        raw: &[u8],
        id: &str,
        from: &str,
    ) -> String {
        // Final delivery: the envelope sender goes first, as Return-Path
        // (RFC 5321 §4.4).
        let mut stored = format!("Return-Path: <{from}>\r\n").into_bytes();
        stored.extend_from_slice(stamped);
        let mut temporary = None;
        let mut permanent = None;
        // Each alias's rules (forwarding MX only), read before storing:
        // they say whether the mailbox keeps a copy.
        let mut rules = Vec::new();
        for rcpt in rcpts {
            let Ok(rcpt) = AliasAddress::try_from(rcpt.as_str()) else {
                permanent = Some(reply(550, "5.1.1", "No such mailbox here"));
                continue;
            };
            let rcpt = &rcpt;
            if self.config.forwarding.is_some() {
                let op = Op::Admin(AdminOp::Rules(rcpt.clone()));
                match self.router.request(rcpt, op).await {
                    Ok(Reply::Admin(AdminReply::Rules(r))) => {
                        let stores = r.stores();
                        rules.push((rcpt.clone(), r));
                        if !stores {
                            continue;
                        }
                    }
                    other => {
                        tracing::warn!(reply = ?other.err(), "reading delivery rules failed");
                        temporary = Some(reply(451, "4.3.0", "Delivery failed; try again later"));
                        continue;
                    }
                }
            }
            // A retry of the same bytes to the same recipient (our 4xx after
            // some copies were stored) is stored once.
            let mut h = Sha256::new();
            h.update(rcpt.as_str().as_bytes());
            h.update([0]);
            h.update(raw);
            let delivery_ref = format!("smtp:{:x}", h.finalize());
            let op = Op::Deliver {
                address: rcpt.clone(),
                raw: stored.clone(),
                delivery_ref: Some(delivery_ref),
            };
            match self.router.request(rcpt, op).await {
                Ok(Reply::Delivery(_)) => {}
                Ok(other) => {
                    tracing::error!(reply = ?other, "unexpected reply to a delivery");
                    temporary = Some(reply(451, "4.3.0", "Delivery failed; try again later"));
                }
                Err(ClientError::Remote(e)) => match e.code {
                    ErrorCode::TooLarge => permanent = Some(self.too_large()),
                    ErrorCode::OverQuota => {
                        temporary = Some(reply(452, "4.2.2", "Mailbox full; try again later"));
                    }
                    ErrorCode::NotFound => {
                        permanent = Some(reply(550, "5.1.1", "No such mailbox here"));
                    }
                    _ => {
                        tracing::warn!(error = %e, "delivery failed");
                        temporary = Some(reply(451, "4.3.0", "Delivery failed; try again later"));
                    }
                },
                Err(e) => {
                    tracing::warn!(error = %e, "delivery failed");
                    temporary = Some(reply(451, "4.4.3", "Delivery failed; try again later"));
                }
            }
        }
        // Copies already stored are not stored again when the sender
        // retries (see `delivery_ref`), so a temporary failure of any copy
        // asks for a retry of all.
        if let Some(r) = temporary.or(permanent) {
            return r;
        }
        if let Err(r) = self.carry_out(&rules, stamped, raw, from).await {
            return r;
        }
        tracing::info!(
            id,
            from = %from,
            recipients = rcpts.len(),
            size = raw.len(),
            "delivered"
        );
        reply(250, "2.0.0", &format!("Ok: delivered as {id}"))
    }

    /// Carries out the rules of the aliases that just got their mail:
    /// webhook posts are queued; forwards to our aliases get one more copy
    /// (and are not forwarded further: no loops), the others go out
    /// through the queue with an SRS sender.
    async fn carry_out(
        &self,
        rules: &[(AliasAddress, DeliveryRules)],
        stamped: &[u8],
        raw: &[u8],
        from: &str,
    ) -> Result<(), String> {
        let Some(fwd) = &self.config.forwarding else {
            return Ok(());
        };
        let later = || {
            reply(
                451,
                "4.3.0",
                "Cannot forward the message now; try again later",
            )
        };
        for (alias, r) in rules {
            self.post_webhooks(fwd, alias, &r.webhooks, stamped, raw, from)
                .await?;
            if let Some(v) = &r.vacation {
                self.vacation_reply(fwd, alias, v, raw, from).await;
            }
            let targets = r.forwards.clone();
            if targets.is_empty() {
                continue;
            }
            let mut remote = Vec::new();
            for t in targets {
                let local = match AliasAddress::try_from(t.as_str()) {
                    Ok(a) => match self
                        .router
                        .request(&a, Op::Locate { address: a.clone() })
                        .await
                    {
                        Ok(Reply::Holds(true)) => Some(a),
                        _ => None,
                    },
                    Err(_) => None,
                };
                match local {
                    Some(a) => {
                        let mut copy = format!("Return-Path: <{from}>\r\n").into_bytes();
                        copy.extend_from_slice(stamped);
                        let op = Op::Deliver {
                            address: a.clone(),
                            raw: copy,
                            delivery_ref: None,
                        };
                        if self.router.request(&a, op).await.is_err() {
                            return Err(later());
                        }
                    }
                    None => remote.push(t),
                }
            }
            if !remote.is_empty() {
                let domain = alias.as_str().rsplit_once('@').map_or("", |(_, d)| d);
                let sender = fwd.srs.forward(from, domain);
                let sealed = self.arc_seal(fwd, domain, stamped, from).await;
                if let Err(e) = fwd.outbound.enqueue(&sender, &remote, &sealed).await {
                    tracing::error!(error = %e, "queueing a forwarded copy failed");
                    return Err(later());
                }
            }
        }
        Ok(())
    }

    /// Queues the alias's vacation reply to `from`, when it is active and
    /// the message is one to answer. Best effort: the mail itself is
    /// delivered either way, so a failure here is logged, not returned.
    async fn vacation_reply(
        &self,
        fwd: &Forwarding,
        alias: &AliasAddress,
        v: &cofre_storage::admin::Vacation,
        raw: &[u8],
        from: &str,
    ) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        if !v.active(now) || !crate::vacation::answers(alias.as_str(), from, raw) {
            return;
        }
        match fwd.outbound.vacation_due(alias.as_str(), from) {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                tracing::warn!(error = %e, "vacation reply bookkeeping failed");
                return;
            }
        }
        let reply = crate::vacation::reply(alias.as_str(), from, v, raw, &rfc5322_now());
        // Signed like any mail of the alias's domain.
        let reply = match fwd.outbound.dkim_key(alias.domain()) {
            Ok(Some(key)) => match crate::auth::dkim_sign(&key, &reply) {
                Ok(h) => [h.as_bytes(), &reply].concat(),
                Err(_) => reply,
            },
            _ => reply,
        };
        // A null envelope sender: nothing answers an automatic reply.
        if let Err(e) = fwd.outbound.enqueue("", &[from.to_string()], &reply).await {
            tracing::warn!(error = %e, "queueing a vacation reply failed");
        }
    }

    /// Queues one post per webhook of `alias` (none: nothing to do).
    /// The event id is derived from recipient and message, so a sender's
    /// retry of the same message produces the same id.
    async fn post_webhooks(
        &self,
        fwd: &Forwarding,
        alias: &AliasAddress,
        targets: &[WebhookTarget],
        stamped: &[u8],
        raw: &[u8],
        from: &str,
    ) -> Result<(), String> {
        let later = || {
            reply(
                451,
                "4.3.0",
                "Cannot queue the webhook posts now; try again later",
            )
        };
        if targets.is_empty() {
            return Ok(());
        }
        let mut h = Sha256::new();
        h.update(alias.as_str().as_bytes());
        h.update([0]);
        h.update(raw);
        let event_id = format!("{:x}", h.finalize())[..32].to_string();
        let arrival = crate::webhook::Arrival {
            from,
            alias: alias.as_str(),
            remote_ip: self.peer.ip().to_string(),
            helo: self.helo_name(),
            received_at: cofre_storage::time::now(),
        };
        let payload = crate::webhook::payload(&event_id, &arrival, stamped);
        let body = match serde_json::to_vec(&payload) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "webhook payload");
                return Err(later());
            }
        };
        for t in targets {
            if let Err(e) = fwd
                .outbound
                .enqueue_webhook(t, alias.as_str(), &event_id, body.clone())
                .await
            {
                tracing::error!(error = %e, "queueing a webhook post failed");
                return Err(later());
            }
        }
        Ok(())
    }

    /// `stamped` with an ARC set by `domain` on top, when MX checks are on
    /// and the domain has a DKIM key; else `stamped` as it is (forwarded
    /// unsealed, with its SRS sender still passing SPF).
    async fn arc_seal(
        &self,
        fwd: &Forwarding,
        domain: &str,
        stamped: &[u8],
        from: &str,
    ) -> Vec<u8> {
        let Some(auth) = &self.config.auth else {
            return stamped.to_vec();
        };
        let key = match fwd.outbound.dkim_key(domain) {
            Ok(Some(k)) => k,
            Ok(None) => return stamped.to_vec(),
            Err(e) => {
                tracing::warn!(error = %e, domain, "reading the DKIM key failed; forwarding unsealed");
                return stamped.to_vec();
            }
        };
        match auth
            .seal(&key, stamped, self.peer.ip(), self.helo_name(), from)
            .await
        {
            Ok(Some(set)) => [set.as_bytes(), stamped].concat(),
            Ok(None) => stamped.to_vec(),
            Err(e) => {
                tracing::warn!(error = %e, domain, "ARC sealing failed; forwarding unsealed");
                stamped.to_vec()
            }
        }
    }

    /// Submission: remote recipients into the outbound queue, ours into
    /// their mailboxes, a copy into the sender's Sent folder.
    async fn submit(
        &self,
        sub: &Submission,
        env: Envelope,
        stamped: &[u8],
        raw: &[u8],
        id: &str,
    ) -> String {
        let Some((me, session)) = &self.auth else {
            return reply(530, "5.7.0", "Authentication required");
        };
        // Signed once, by the alias's domain when it has a key; every
        // copy (remote, local, Sent) is the signed message.
        let signed;
        let stamped = match sub.outbound.dkim_key(me.domain()) {
            Ok(Some(key)) => match crate::auth::dkim_sign(&key, stamped) {
                Ok(header) => {
                    signed = [header.as_bytes(), stamped].concat();
                    &signed[..]
                }
                Err(e) => {
                    tracing::error!(error = %e, "DKIM signing failed");
                    return reply(451, "4.3.0", "Cannot sign the message now; try again later");
                }
            },
            Ok(None) => stamped,
            Err(e) => {
                tracing::error!(error = %e, "reading the DKIM key failed");
                return reply(451, "4.3.0", "Cannot sign the message now; try again later");
            }
        };
        let (mut local, mut remote) = (Vec::new(), Vec::new());
        for rcpt in &env.rcpts {
            let ours = match AliasAddress::try_from(rcpt.as_str()) {
                Ok(a) => {
                    let op = Op::Locate { address: a.clone() };
                    match self.router.request(&a, op).await {
                        Ok(Reply::Holds(h)) => h,
                        Err(ClientError::Remote(e)) if e.code == ErrorCode::NotFound => false,
                        Ok(_) | Err(_) => {
                            return reply(
                                451,
                                "4.4.3",
                                "Cannot route the recipients now; try again later",
                            );
                        }
                    }
                }
                Err(_) => false,
            };
            if ours {
                local.push(rcpt.clone());
            } else {
                remote.push(rcpt.clone());
            }
        }
        // The promise to other servers' recipients first: the queue.
        if !remote.is_empty()
            && let Err(e) = sub.outbound.enqueue(&env.from, &remote, stamped).await
        {
            tracing::error!(error = %e, "queueing outbound mail failed");
            return reply(
                451,
                "4.3.0",
                "Cannot queue the message now; try again later",
            );
        }
        if !local.is_empty() {
            let r = self
                .deliver_local(&local, stamped, raw, id, &env.from)
                .await;
            if !r.starts_with('2') {
                return r;
            }
        }
        if self.via.is_some() {
            tracing::info!(id, local = local.len(), remote = remote.len(), "submitted");
            return reply(250, "2.0.0", &format!("Ok: queued as {id}"));
        }
        let sent = async {
            let folders = match self
                .router
                .request(me, Op::Folders { session: *session })
                .await
            {
                Ok(Reply::Folders(f)) => f,
                other => return Err(format!("{other:?}")),
            };
            let folder = folders
                .iter()
                .find(|f| f.role == Some(Role::Sent))
                .map(|f| f.id)
                .ok_or_else(|| "no Sent folder".to_string())?;
            let seen = Keyword::try_from("$seen").map_err(|e| e.to_string())?;
            let op = Op::Append {
                session: *session,
                folder,
                raw: stamped.to_vec(),
                options: AppendOptions {
                    keywords: vec![seen],
                    ..AppendOptions::default()
                },
            };
            match self.router.request(me, op).await {
                Ok(_) => Ok(()),
                Err(e) => Err(e.to_string()),
            }
        };
        if let Err(e) = sent.await {
            // The mail is on its way; only the copy is missing. Said in
            // the reply and the log, not retried (that would send twice).
            tracing::error!(error = %e, id, "copy into Sent failed");
            return reply(
                250,
                "2.0.0",
                &format!("Ok: queued as {id} (the copy into Sent failed)"),
            );
        }
        tracing::info!(id, local = local.len(), remote = remote.len(), "submitted");
        reply(250, "2.0.0", &format!("Ok: queued as {id}"))
    }

    async fn auth(&mut self, mechanism: &str, initial: Option<String>) -> Next {
        let Some(sub) = &self.config.submission else {
            return Next::Reply(reply(
                503,
                "5.5.1",
                "This is a mail exchanger: no AUTH here (use the submission port)",
            ));
        };
        if self.auth.is_some() {
            return Next::Reply(reply(503, "5.5.1", "Already authenticated"));
        }
        if self.envelope.is_some() {
            return Next::Reply(reply(503, "5.5.1", "AUTH not inside a transaction"));
        }
        if !self.tls && !sub.plain_auth {
            return Next::Reply(reply(538, "5.7.11", "Encryption required: STARTTLS first"));
        }
        match (mechanism, initial) {
            ("PLAIN", Some(ir)) => Next::Reply(self.plain(&ir).await),
            ("PLAIN", None) => {
                self.sasl = Some(Sasl::Plain);
                Next::AuthContinue("334 \r\n".into())
            }
            ("LOGIN", None) => {
                self.sasl = Some(Sasl::LoginUser);
                // base64("Username:")
                Next::AuthContinue("334 VXNlcm5hbWU6\r\n".into())
            }
            ("LOGIN", Some(user)) => match b64(&user) {
                Some(u) => {
                    self.sasl = Some(Sasl::LoginPassword(u));
                    Next::AuthContinue("334 UGFzc3dvcmQ6\r\n".into())
                }
                None => Next::Reply(reply(501, "5.5.2", "Cannot decode the response")),
            },
            _ => Next::Reply(reply(504, "5.5.4", "Unrecognized authentication type")),
        }
    }

    /// A line of a multi-step AUTH.
    pub async fn auth_line(&mut self, line: &[u8]) -> Next {
        let line = String::from_utf8_lossy(line).trim().to_string();
        if line == "*" {
            self.sasl = None;
            return Next::Reply(reply(501, "5.0.0", "Authentication cancelled"));
        }
        match self.sasl.take() {
            Some(Sasl::Plain) => Next::Reply(self.plain(&line).await),
            Some(Sasl::LoginUser) => match b64(&line) {
                Some(u) => {
                    self.sasl = Some(Sasl::LoginPassword(u));
                    Next::AuthContinue("334 UGFzc3dvcmQ6\r\n".into())
                }
                None => Next::Reply(reply(501, "5.5.2", "Cannot decode the response")),
            },
            Some(Sasl::LoginPassword(user)) => match b64(&line) {
                Some(p) => Next::Reply(self.login(&user, &p).await),
                None => Next::Reply(reply(501, "5.5.2", "Cannot decode the response")),
            },
            None => Next::Reply(reply(503, "5.5.1", "No AUTH in progress")),
        }
    }

    /// SASL PLAIN: base64 of `authzid NUL authcid NUL password`.
    async fn plain(&mut self, b64_response: &str) -> String {
        let decoded = if b64_response == "=" {
            Some(Vec::new())
        } else {
            b64_bytes(b64_response)
        };
        let Some(raw) = decoded else {
            return reply(501, "5.5.2", "Cannot decode the response");
        };
        let mut parts = raw.split(|&c| c == 0);
        let (Some(authz), Some(user), Some(pass), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return reply(501, "5.5.2", "Malformed PLAIN response");
        };
        if !authz.is_empty() && !authz.eq_ignore_ascii_case(user) {
            return reply(535, "5.7.8", "Cannot act as another user");
        }
        let (user, pass) = (
            String::from_utf8_lossy(user).into_owned(),
            String::from_utf8_lossy(pass).into_owned(),
        );
        self.login(&user, &pass).await
    }

    async fn login(&mut self, user: &str, password: &str) -> String {
        let Some(sub) = self.config.submission.clone() else {
            return reply(503, "5.5.1", "No AUTH here");
        };
        let ip = Some(self.peer.ip());
        if let Some(wait) = sub.limiter.blocked(user, ip) {
            return reply(
                454,
                "4.7.0",
                &format!(
                    "Too many failed logins; try again in {} seconds",
                    wait.as_secs().max(1)
                ),
            );
        }
        let failed = || reply(535, "5.7.8", "Authentication credentials invalid");
        let Ok(address) = AliasAddress::try_from(user) else {
            sub.limiter.failed(user, ip);
            tokio::time::sleep(sub.failed_login_delay).await;
            return failed();
        };
        let op = Op::Login {
            address: address.clone(),
            password: Password::new(password.to_string()),
        };
        match self.router.request(&address, op).await {
            Ok(Reply::Session(session)) => {
                self.auth = Some((address, session));
                reply(235, "2.7.0", "Authentication successful")
            }
            Err(ClientError::Remote(e))
                if matches!(e.code, ErrorCode::WrongPassword | ErrorCode::NotFound) =>
            {
                sub.limiter.failed(user, ip);
                tokio::time::sleep(sub.failed_login_delay).await;
                failed()
            }
            other => {
                tracing::warn!(reply = ?other.err(), "login over the link failed");
                reply(454, "4.7.0", "Temporary authentication failure")
            }
        }
    }
}

fn b64_bytes(s: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .ok()
}

fn b64(s: &str) -> Option<String> {
    String::from_utf8(b64_bytes(s)?).ok()
}

/// Now as an RFC 5322 date in UTC, for `Received`.
pub(crate) fn rfc5322_now() -> String {
    let now = cofre_storage::time::now();
    let iso = cofre_storage::time::iso(now);
    // `iso` is `YYYY-MM-DDTHH:MM:SSZ`.
    let (date, time) = iso.split_once('T').unwrap_or((&iso, "00:00:00Z"));
    let mut parts = date.split('-');
    let (y, m, d) = (
        parts.next().unwrap_or("1970"),
        parts
            .next()
            .and_then(|m| m.parse::<usize>().ok())
            .unwrap_or(1),
        parts
            .next()
            .and_then(|d| d.parse::<u32>().ok())
            .unwrap_or(1),
    );
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    // 1970-01-01 was a Thursday.
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    let weekday = DAYS[(now.div_euclid(86_400).rem_euclid(7)) as usize];
    format!(
        "{weekday}, {d} {} {y} {} +0000",
        MONTHS[m.clamp(1, 12) - 1],
        time.trim_end_matches('Z')
    )
}

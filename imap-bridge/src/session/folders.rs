//! Logging in, and the commands about mailboxes as a whole: names on the
//! wire, LIST/LSUB, STATUS, SELECT, APPEND, QUOTA.

use super::*;

impl Session {
    pub(super) fn check_plain_auth(&self) -> Res<()> {
        if self.tls || self.config.plain_auth {
            Ok(())
        } else {
            Err(no(
                Some("PRIVACYREQUIRED"),
                "use STARTTLS (or the TLS port) before logging in",
            ))
        }
    }

    pub(super) async fn login(&mut self, user: &[u8], password: &[u8]) -> Res<()> {
        use crate::login::{Attempt, LoginError};
        let user = String::from_utf8_lossy(user).into_owned();
        let attempt = Attempt {
            router: &self.router,
            limiter: &self.config.limiter,
            peer: self.peer,
            delay: self.config.failed_login_delay,
        };
        match attempt.log_in(&user, password).await {
            Ok((address, session)) => {
                self.auth = Some(Auth { address, session });
                // Events from before the login are about nothing we show.
                self.events = self.events.resubscribe();
                Ok(())
            }
            Err(LoginError::Throttled(wait)) => Err(no(
                Some("UNAVAILABLE"),
                format!(
                    "too many failed logins; try again in {} seconds",
                    wait.as_secs().max(1)
                ),
            )),
            Err(LoginError::Failed) => Err(no(
                Some("AUTHENTICATIONFAILED"),
                "invalid credentials (the user name is the full address)",
            )),
            Err(LoginError::Link(e)) => Err(link_error(e)),
        }
    }

    /// SASL PLAIN: base64 of `authzid NUL authcid NUL password`.
    pub(super) async fn sasl_plain(&mut self, b64: &[u8]) -> Res<()> {
        use crate::login::PlainError;
        match crate::login::plain(b64) {
            Ok((user, pass)) => self.login(user.as_bytes(), &pass).await,
            Err(PlainError::NotBase64) => Err(bad("the SASL response is not base64")),
            Err(PlainError::Malformed) => Err(bad("malformed PLAIN response")),
            Err(PlainError::OtherUser) => Err(no(
                Some("AUTHORIZATIONFAILED"),
                "cannot act as another user",
            )),
        }
    }

    /// A wire name in the client's encoding → a storage name, with INBOX
    /// (any case, also as the first level) normalised.
    pub(super) fn storage_name(&self, wire: &[u8]) -> Res<String> {
        let name = if self.utf8 {
            String::from_utf8(wire.to_vec()).ok()
        } else {
            mutf7::decode(wire)
        }
        .ok_or_else(|| bad("mailbox name is not valid modified UTF-7"))?;
        Ok(match name.split_once('/') {
            Some((first, rest)) if first.eq_ignore_ascii_case("INBOX") => format!("INBOX/{rest}"),
            _ if name.eq_ignore_ascii_case("INBOX") => "INBOX".into(),
            _ => name,
        })
    }

    /// A storage name in the client's encoding.
    pub(super) fn wire_name(&self, name: &str) -> Vec<u8> {
        if self.utf8 {
            name.as_bytes().to_vec()
        } else {
            mutf7::encode(name).into_bytes()
        }
    }

    /// Writes a wire name as an IMAP string.
    pub(super) fn write_name(&self, out: &mut Vec<u8>, wire: &[u8]) {
        render::string(out, wire);
    }

    pub(super) async fn folders(&self) -> Res<Vec<Folder>> {
        match self
            .call(Op::Folders {
                session: self.sid()?,
            })
            .await?
        {
            Reply::Folders(f) => Ok(f),
            _ => Err(no(Some("SERVERBUG"), "unexpected reply")),
        }
    }

    pub(super) async fn find(&self, name: &FolderName) -> Res<Option<Folder>> {
        Ok(self
            .folders()
            .await?
            .into_iter()
            .find(|f| f.name == name.as_str()))
    }

    /// The folder a wire name names, or `NO [NONEXISTENT]`.
    pub(super) async fn existing(&self, wire: &[u8]) -> Res<Folder> {
        let name = self.storage_name(wire)?;
        self.folders()
            .await?
            .into_iter()
            .find(|f| f.name == name)
            .ok_or_else(|| no(Some("NONEXISTENT"), "no such mailbox"))
    }

    /// (UID, email) of every message of a folder, in UID order.
    pub(super) async fn folder_index(&self, folder: FolderId) -> Res<Vec<(Uid, EmailId)>> {
        match self
            .call(Op::FolderIndex {
                session: self.sid()?,
                folder,
            })
            .await?
        {
            Reply::FolderIndex(v) => Ok(v),
            _ => Err(no(Some("SERVERBUG"), "unexpected reply")),
        }
    }

    pub(super) async fn folder_uids(&self, folder: FolderId) -> Res<Vec<Uid>> {
        Ok(self
            .folder_index(folder)
            .await?
            .into_iter()
            .map(|(u, _)| u)
            .collect())
    }

    pub(super) async fn list(
        &mut self,
        reference: &[u8],
        patterns: &[Vec<u8>],
        options: &ListOptions,
        out: &mut Vec<u8>,
    ) -> Res<()> {
        // `LIST "" ""`: the hierarchy delimiter.
        if !options.extended && patterns.len() == 1 && patterns[0].is_empty() {
            out.extend_from_slice(b"* LIST (\\Noselect) \"/\" \"\"\r\n");
            return Ok(());
        }
        self.list_inner(reference, patterns, options, false, out)
            .await
    }

    pub(super) async fn list_inner(
        &mut self,
        reference: &[u8],
        patterns: &[Vec<u8>],
        options: &ListOptions,
        lsub: bool,
        out: &mut Vec<u8>,
    ) -> Res<()> {
        let folders = self.folders().await?;
        let mut regexes = Vec::new();
        for p in patterns {
            let mut full = reference.to_vec();
            full.extend_from_slice(p);
            // Patterns are matched on decoded names; wildcards survive.
            let decoded = if self.utf8 {
                String::from_utf8(full).ok()
            } else {
                mutf7::decode(&full)
            }
            .ok_or_else(|| bad("pattern is not valid modified UTF-7"))?;
            regexes.push(decoded);
        }
        let names: HashSet<&str> = folders.iter().map(|f| f.name.as_str()).collect();
        let has_children = |name: &str| {
            let prefix = format!("{name}/");
            names.iter().any(|n| n.starts_with(&prefix))
        };
        let subscribed_child = |name: &str| {
            let prefix = format!("{name}/");
            folders
                .iter()
                .any(|f| f.subscribed && f.name.starts_with(&prefix))
        };
        let mut sorted: Vec<&Folder> = folders.iter().collect();
        sorted.sort_by(|a, b| {
            (a.role != Some(Role::Inbox))
                .cmp(&(b.role != Some(Role::Inbox)))
                .then(a.name.cmp(&b.name))
        });
        for f in sorted {
            if !regexes.iter().any(|p| matches_pattern(p, &f.name)) {
                continue;
            }
            let selected_by_sub = !options.subscribed || f.subscribed;
            let selected_by_use =
                !options.special_use_only || f.role.is_some_and(|r| r != Role::Inbox);
            let child_info =
                options.recursive_match && !selected_by_sub && subscribed_child(&f.name);
            if !(child_info || selected_by_sub && selected_by_use) {
                continue;
            }
            let mut attrs: Vec<&str> = Vec::new();
            if !lsub {
                attrs.push(if has_children(&f.name) {
                    "\\HasChildren"
                } else {
                    "\\HasNoChildren"
                });
            }
            if !lsub && (options.subscribed || options.return_subscribed) && f.subscribed {
                attrs.push("\\Subscribed");
            }
            if !lsub
                && (!options.extended || options.return_special_use || options.special_use_only)
                && let Some(u) = f.role.and_then(special_use)
            {
                attrs.push(u);
            }
            let mut line = Vec::new();
            line.extend_from_slice(if lsub { b"* LSUB (" } else { b"* LIST (" });
            line.extend_from_slice(attrs.join(" ").as_bytes());
            line.extend_from_slice(b") \"/\" ");
            let wire = self.wire_name(&f.name);
            self.write_name(&mut line, &wire);
            if child_info {
                line.extend_from_slice(b" (\"CHILDINFO\" (\"SUBSCRIBED\"))");
            }
            line.extend_from_slice(b"\r\n");
            out.extend_from_slice(&line);
            if !options.status.is_empty() {
                self.status(f, &options.status, out).await?;
            }
        }
        Ok(())
    }

    pub(super) async fn status(
        &mut self,
        f: &Folder,
        items: &[StatusItem],
        out: &mut Vec<u8>,
    ) -> Res<()> {
        let mut parts = Vec::new();
        for item in items {
            let v = match item {
                StatusItem::Messages => format!("MESSAGES {}", f.total),
                StatusItem::UidNext => format!("UIDNEXT {}", f.uid_next),
                StatusItem::UidValidity => format!("UIDVALIDITY {}", f.uid_validity),
                StatusItem::Unseen => format!("UNSEEN {}", f.unseen),
                StatusItem::Recent => "RECENT 0".into(),
                StatusItem::HighestModSeq => format!("HIGHESTMODSEQ {}", f.highest_modseq.max(1)),
                StatusItem::AppendLimit => format!("APPENDLIMIT {}", self.config.append_limit),
                StatusItem::Deleted => {
                    let n = self
                        .search_uids(f.id, Filter::Keyword(Keyword::deleted()))
                        .await?
                        .len();
                    format!("DELETED {n}")
                }
                StatusItem::Size => {
                    let index = self.folder_index(f.id).await?;
                    let ids: Vec<EmailId> = index.into_iter().map(|(_, e)| e).collect();
                    let size: u64 = self.summaries(&ids).await?.values().map(|s| s.size).sum();
                    format!("SIZE {size}")
                }
            };
            parts.push(v);
        }
        let mut line = b"* STATUS ".to_vec();
        let wire = self.wire_name(&f.name);
        self.write_name(&mut line, &wire);
        line.extend_from_slice(format!(" ({})\r\n", parts.join(" ")).as_bytes());
        out.extend_from_slice(&line);
        Ok(())
    }

    /// UIDs of a folder's messages matching a filter, ascending.
    pub(super) async fn search_uids(&self, folder: FolderId, filter: Filter) -> Res<Vec<u32>> {
        match self
            .call(Op::Search {
                session: self.sid()?,
                query: Query::in_folder(folder, filter),
            })
            .await?
        {
            Reply::Hits(h) => Ok(h.iter().filter_map(|h| h.uid.map(Uid::get)).collect()),
            _ => Err(no(Some("SERVERBUG"), "unexpected reply")),
        }
    }

    /// Header summaries by email id.
    pub(super) async fn summaries(&self, ids: &[EmailId]) -> Res<HashMap<EmailId, EmailSummary>> {
        let mut map = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(2000) {
            match self
                .call(Op::Summaries {
                    session: self.sid()?,
                    emails: chunk.to_vec(),
                })
                .await?
            {
                Reply::Summaries(v) => map.extend(v.into_iter().map(|s| (s.id, s))),
                _ => return Err(no(Some("SERVERBUG"), "unexpected reply")),
            }
        }
        Ok(map)
    }

    pub(super) async fn select(
        &mut self,
        f: Folder,
        read_only: bool,
        qresync: Option<crate::parse::Qresync>,
        out: &mut Vec<u8>,
    ) -> Res<&'static str> {
        // The folder first, then its index: a change in between shows up
        // again at the next sync rather than being missed.
        let index = self.folder_index(f.id).await?;
        let msgs: Vec<Msg> = index
            .into_iter()
            .map(|(uid, email)| Msg {
                uid: uid.get(),
                email,
                modseq: f.highest_modseq,
            })
            .collect();
        let first_unseen = if f.unseen > 0 {
            self.search_uids(
                f.id,
                Filter::Not(Box::new(Filter::Keyword(Keyword::seen()))),
            )
            .await?
            .first()
            .and_then(|u| msgs.binary_search_by_key(u, |m| m.uid).ok())
        } else {
            None
        };
        let wire = self.wire_name(&f.name);
        out.extend_from_slice(
            format!(
                "* FLAGS ({SYSTEM_FLAGS})\r\n* {} EXISTS\r\n* 0 RECENT\r\n",
                msgs.len()
            )
            .as_bytes(),
        );
        if let Some(i) = first_unseen {
            out.extend_from_slice(format!("* OK [UNSEEN {}] first unseen\r\n", i + 1).as_bytes());
        }
        let permanent = if read_only {
            "()".to_string()
        } else {
            format!("({SYSTEM_FLAGS} \\*)")
        };
        out.extend_from_slice(
            format!(
                "* OK [PERMANENTFLAGS {permanent}] flags\r\n\
                 * OK [UIDVALIDITY {}] UIDs valid\r\n\
                 * OK [UIDNEXT {}] predicted next UID\r\n\
                 * OK [HIGHESTMODSEQ {}] highest\r\n",
                f.uid_validity,
                f.uid_next,
                f.highest_modseq.max(1)
            )
            .as_bytes(),
        );
        let mut list = b"* LIST () \"/\" ".to_vec();
        self.write_name(&mut list, &wire);
        list.extend_from_slice(b"\r\n");
        out.extend_from_slice(&list);
        self.selected = Some(Selected {
            id: f.id,
            name: f.name.clone(),
            read_only,
            uid_validity: f.uid_validity,
            msgs,
            modseq: f.highest_modseq,
            gone: HashSet::new(),
        });
        if let Some(q) = qresync
            && q.uid_validity == f.uid_validity
        {
            self.qresync_select(q.modseq, q.known_uids.as_ref(), out)
                .await?;
        }
        Ok(if read_only { "READ-ONLY" } else { "READ-WRITE" })
    }

    async fn qresync_select(
        &mut self,
        since: ModSeq,
        known: Option<&SeqSet>,
        out: &mut Vec<u8>,
    ) -> Res<()> {
        let Some(sel) = self.selected.as_ref() else {
            return Ok(());
        };
        let ch = match self
            .call(Op::FolderChanges {
                session: self.sid()?,
                folder: sel.id,
                since,
            })
            .await?
        {
            Reply::FolderChanges(c) => c,
            _ => return Err(no(Some("SERVERBUG"), "unexpected reply")),
        };
        let max = sel.max_uid().max(1);
        let vanished: Vec<u32> = ch
            .vanished
            .iter()
            .map(|u| u.get())
            .filter(|u| known.is_none_or(|k| k.contains(*u, max)))
            .filter(|u| sel.position(*u).is_none())
            .collect();
        if !vanished.is_empty() {
            out.extend_from_slice(
                format!("* VANISHED (EARLIER) {}\r\n", uid_set(&vanished)).as_bytes(),
            );
        }
        let changed: Vec<(usize, EmailId)> = ch
            .changed
            .iter()
            .filter_map(|(u, _, e)| sel.position(u.get()).map(|i| (i, *e)))
            .collect();
        let ids: Vec<EmailId> = changed.iter().map(|(_, e)| *e).collect();
        let sums = self.summaries(&ids).await?;
        for (i, e) in changed {
            if let (Some(s), Some(sel)) = (sums.get(&e), self.selected.as_ref()) {
                let mut line =
                    format!("* {} FETCH (UID {} FLAGS ", i + 1, sel.msgs[i].uid).into_bytes();
                render::flags(&mut line, &s.keywords);
                line.extend_from_slice(format!(" MODSEQ ({}))\r\n", s.modseq).as_bytes());
                out.extend_from_slice(&line);
            }
        }
        Ok(())
    }

    /// APPEND (and MULTIAPPEND: all messages or none).
    pub(super) async fn append(
        &mut self,
        wire: &[u8],
        messages: Vec<crate::parse::AppendMessage>,
    ) -> Res<String> {
        let name = self.storage_name(wire)?;
        // Appending to the selected mailbox needs no lookup, unless news
        // (a rename, say) arrived since it was selected.
        self.drain_events();
        let selected = self
            .selected
            .as_ref()
            .filter(|s| !self.news && s.name == name)
            .map(|s| (s.id, s.uid_validity));
        let (folder, uid_validity) = match selected {
            Some(x) => x,
            None => {
                let f = self
                    .folders()
                    .await?
                    .into_iter()
                    .find(|f| f.name == name)
                    .ok_or_else(|| no(Some("TRYCREATE"), "no such mailbox"))?;
                (f.id, f.uid_validity)
            }
        };
        for m in &messages {
            if m.data.len() as u64 > self.config.append_limit {
                return Err(no(Some("TOOBIG"), "message larger than APPENDLIMIT"));
            }
        }
        let mut done: Vec<(Uid, EmailId, bool)> = Vec::new();
        for m in messages {
            let keywords = keywords_of(&m.flags)?;
            let r = self
                .call(Op::Append {
                    session: self.sid()?,
                    folder,
                    raw: m.data,
                    options: AppendOptions {
                        keywords,
                        received_at: m.date,
                        delivery_ref: None,
                    },
                })
                .await;
            match r {
                Ok(Reply::Appended(a)) => {
                    done.push((a.uid, a.email_id, a.duplicate));
                    // Into the selected mailbox, with nothing else written
                    // meanwhile: the view learns the message here.
                    let into_selected = self.selected.as_ref().is_some_and(|s| {
                        s.id == folder && a.modseq == s.modseq + 1 && a.uid.get() > s.max_uid()
                    });
                    if self.own_write(a.modseq)
                        && into_selected
                        && let Some(sel) = self.selected.as_mut()
                    {
                        sel.msgs.push(Msg {
                            uid: a.uid.get(),
                            email: a.email_id,
                            modseq: a.modseq,
                        });
                        self.exists_changed = true;
                    }
                }
                Ok(_) => return Err(no(Some("SERVERBUG"), "unexpected reply")),
                Err(e) => {
                    // MULTIAPPEND is all or nothing: take back what went in.
                    let fresh: Vec<Uid> = done.iter().filter(|d| !d.2).map(|d| d.0).collect();
                    if !fresh.is_empty() {
                        let _ = self
                            .call(Op::Expunge {
                                session: self.sid()?,
                                folder,
                                only: Some(fresh.clone()),
                            })
                            .await;
                        let ids: Vec<EmailId> = done.iter().filter(|d| !d.2).map(|d| d.1).collect();
                        let _ = self
                            .call(Op::Destroy {
                                session: self.sid()?,
                                emails: ids,
                            })
                            .await;
                    }
                    return Err(e);
                }
            }
        }
        let uids: Vec<u32> = done.iter().map(|d| d.0.get()).collect();
        Ok(format!("APPENDUID {uid_validity} {}", uid_set(&uids)))
    }

    pub(super) async fn quota(&self, out: &mut Vec<u8>) -> Res<()> {
        match self
            .call(Op::Usage {
                session: self.sid()?,
            })
            .await?
        {
            Reply::Usage { used, quota } => {
                match quota {
                    Some(q) => out.extend_from_slice(
                        format!(
                            "* QUOTA \"\" (STORAGE {} {})\r\n",
                            used.div_ceil(1024),
                            q / 1024
                        )
                        .as_bytes(),
                    ),
                    None => out.extend_from_slice(b"* QUOTA \"\" ()\r\n"),
                }
                Ok(())
            }
            _ => Err(no(Some("SERVERBUG"), "unexpected reply")),
        }
    }
}

fn special_use(r: Role) -> Option<&'static str> {
    match r {
        Role::Inbox => None,
        Role::Drafts => Some("\\Drafts"),
        Role::Sent => Some("\\Sent"),
        Role::Junk => Some("\\Junk"),
        Role::Trash => Some("\\Trash"),
        Role::Archive => Some("\\Archive"),
    }
}

/// LIST wildcard matching: `*` matches anything, `%` anything but `/`.
/// INBOX matches case-insensitively.
pub(super) fn matches_pattern(pattern: &str, name: &str) -> bool {
    fn go(p: &[char], n: &[char]) -> bool {
        match p.split_first() {
            None => n.is_empty(),
            Some(('*', rest)) => (0..=n.len()).any(|i| go(rest, &n[i..])),
            Some(('%', rest)) => (0..=n.len())
                .take_while(|&i| i == 0 || n[i - 1] != '/')
                .any(|i| go(rest, &n[i..])),
            Some((c, rest)) => n.first() == Some(c) && go(rest, &n[1..]),
        }
    }
    let fold = |s: &str| -> Vec<char> {
        match s.get(..5) {
            Some(head)
                if head.eq_ignore_ascii_case("INBOX")
                    && (s.len() == 5 || s.as_bytes()[5] == b'/') =>
            {
                let mut v: Vec<char> = "INBOX".chars().collect();
                v.extend(s[5..].chars());
                v
            }
            _ => s.chars().collect(),
        }
    };
    let (p, n) = (fold(pattern), fold(name));
    if p.len() > 500 || p.iter().filter(|c| **c == '*' || **c == '%').count() > 10 {
        return false;
    }
    go(&p, &n)
}

/// `\Seen` → `$seen`, keywords as themselves (lower-cased).
pub(super) fn keyword_of(f: &Flag) -> Res<Option<Keyword>> {
    let k = match f {
        Flag::System(s) => match s.as_str() {
            "SEEN" => Keyword::seen(),
            "ANSWERED" => Keyword::answered(),
            "FLAGGED" => Keyword::flagged(),
            "DRAFT" => Keyword::draft(),
            "DELETED" => Keyword::deleted(),
            "RECENT" | "*" => return Ok(None),
            other => return Err(bad(format!("unknown system flag \\{other}"))),
        },
        Flag::Keyword(k) => {
            Keyword::try_from(k.as_str()).map_err(|_| bad(format!("invalid keyword {k}")))?
        }
    };
    Ok(Some(k))
}

pub(super) fn keywords_of(flags: &[Flag]) -> Res<Vec<Keyword>> {
    let mut v = Vec::new();
    for f in flags {
        if let Some(k) = keyword_of(f)? {
            v.push(k);
        }
    }
    Ok(v)
}

/// UIDs as a compact set, `1:3,7,9:10`: runs of consecutive UIDs joined,
/// order kept (COPYUID pairs its two lists by position).
pub(super) fn uid_set(uids: &[u32]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < uids.len() {
        let start = uids[i];
        let mut end = start;
        while i + 1 < uids.len() && uids[i + 1] == end + 1 {
            i += 1;
            end = uids[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}:{end}"));
        }
        i += 1;
    }
    out
}

/// A calendar day as storage's [`Day`].
pub(super) fn day((y, m, d): (i32, u32, u32)) -> Res<Day> {
    Day::try_from(format!("{y:04}-{m:02}-{d:02}").as_str()).map_err(|e| bad(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_patterns() {
        assert!(matches_pattern("*", "Work/Projects"));
        assert!(!matches_pattern("%", "Work/Projects"));
        assert!(matches_pattern("Work/%", "Work/Projects"));
        assert!(matches_pattern("inbox", "INBOX"));
        assert!(matches_pattern("Inbox/%", "INBOX/x"));
        assert!(!matches_pattern("Work", "work"));
        assert_eq!(uid_set(&[1, 2, 3, 7, 9, 10]), "1:3,7,9:10");
    }
}

//! Commands of the selected state — FETCH, STORE, SEARCH, SORT, THREAD,
//! COPY/MOVE, EXPUNGE, CLOSE — and `sync`, which tells the client what
//! changed on the primary.

use super::folders::{day, keyword_of, keywords_of, uid_set};
use super::*;

/// Whether a FETCH item needs the message's bytes.
fn needs_raw(i: &FetchItem) -> bool {
    matches!(
        i,
        FetchItem::Rfc822
            | FetchItem::Rfc822Header
            | FetchItem::Rfc822Text
            | FetchItem::Body
            | FetchItem::BodyStructure
            | FetchItem::Section { .. }
            | FetchItem::Binary { .. }
            | FetchItem::BinarySize(_)
    )
}

/// Whether a FETCH item marks the message \Seen.
fn sets_seen(i: &FetchItem) -> bool {
    matches!(
        i,
        FetchItem::Rfc822
            | FetchItem::Rfc822Text
            | FetchItem::Section { peek: false, .. }
            | FetchItem::Binary { peek: false, .. }
    )
}

impl Session {
    fn sel(&self) -> Res<&Selected> {
        self.selected
            .as_ref()
            .ok_or_else(|| bad("no mailbox selected"))
    }

    fn writable(&self) -> Res<&Selected> {
        let s = self.sel()?;
        if s.read_only {
            return Err(no(Some("READ-ONLY"), "the mailbox is open read-only"));
        }
        Ok(s)
    }

    pub(super) async fn selected_command(&mut self, body: Body, out: &mut Vec<u8>) -> Res<Done> {
        match body {
            Body::Check => {
                self.sel()?;
                self.news = true;
                done("CHECK completed")
            }
            Body::Unselect => {
                self.sel()?;
                self.selected = None;
                done("UNSELECT completed")
            }
            Body::Close => {
                let sel = self.sel()?;
                if !sel.read_only {
                    let folder = sel.id;
                    self.call(Op::Expunge {
                        session: self.sid()?,
                        folder,
                        only: None,
                    })
                    .await?;
                }
                self.selected = None;
                done("CLOSE completed")
            }
            Body::Expunge(only) => {
                let sel = self.writable()?;
                let only = match only {
                    Some(set) => Some(
                        sel.resolve(&set, true)?
                            .into_iter()
                            .filter_map(|i| Uid::try_from(sel.msgs[i].uid).ok())
                            .collect(),
                    ),
                    None => None,
                };
                let folder = sel.id;
                let r = self
                    .call(Op::Expunge {
                        session: self.sid()?,
                        folder,
                        only,
                    })
                    .await?;
                let Reply::Expunged { uids, modseq } = r else {
                    return Err(no(Some("SERVERBUG"), "unexpected reply"));
                };
                if self.own_write(modseq) {
                    // Nothing else happened meanwhile: these are all the
                    // news, and they are told below.
                    if let Some(sel) = self.selected.as_mut() {
                        sel.gone.extend(uids.iter().map(|u| u.get()));
                    }
                } else {
                    self.news = true;
                }
                done("EXPUNGE completed")
            }
            Body::Fetch {
                uid,
                set,
                items,
                changed_since,
                vanished,
            } => {
                if changed_since.is_some() {
                    self.condstore = true;
                }
                if vanished && !self.qresync {
                    return Err(bad("ENABLE QRESYNC first"));
                }
                self.fetch(uid, &set, items, changed_since, vanished, out)
                    .await?;
                done(if uid {
                    "UID FETCH completed"
                } else {
                    "FETCH completed"
                })
            }
            Body::Store {
                uid,
                set,
                unchanged_since,
                mode,
                silent,
                flags,
            } => {
                if unchanged_since.is_some() {
                    self.condstore = true;
                }
                let modified = self
                    .store(uid, &set, unchanged_since, mode, silent, &flags, out)
                    .await?;
                if modified.is_empty() {
                    done("STORE completed")
                } else {
                    done_with(
                        format!("MODIFIED {}", uid_set(&modified)),
                        "some messages changed meanwhile",
                    )
                }
            }
            Body::Search { uid, ret, key } => {
                let hits = self.search(&key, None).await?;
                self.answer_search(uid, ret, &hits, out, "SEARCH");
                done("SEARCH completed")
            }
            Body::Sort {
                uid,
                ret,
                criteria,
                key,
            } => {
                let hits = self.search(&key, Some(&criteria)).await?;
                self.answer_search(uid, ret, &hits, out, "SORT");
                done("SORT completed")
            }
            Body::Thread {
                uid,
                references,
                key,
            } => {
                let hits = self.search(&key, None).await?;
                self.thread(uid, references, &hits, out).await?;
                done("THREAD completed")
            }
            Body::Copy {
                uid,
                set,
                mailbox,
                remove,
            } => {
                let code = self.copy(uid, &set, &mailbox, remove, out).await?;
                match code {
                    Some(c) if !remove => done_with(c, "COPY completed"),
                    _ => done(if remove {
                        "MOVE completed"
                    } else {
                        "COPY completed"
                    }),
                }
            }
            _ => Err(bad("command not valid in this state")),
        }
    }

    /// Tells the client what changed since it was last told: EXPUNGE (or
    /// VANISHED) when `expunge_allowed`, EXISTS, and FETCH of new flags.
    pub(super) async fn sync(&mut self, out: &mut Vec<u8>, expunge_allowed: bool) {
        self.drain_events();
        let Some(sel) = self.selected.as_ref() else {
            return;
        };
        if self.news {
            self.news = false;
            let r = self
                .call(Op::FolderChanges {
                    session: match self.sid() {
                        Ok(s) => s,
                        Err(_) => return,
                    },
                    folder: sel.id,
                    since: sel.modseq,
                })
                .await;
            match r {
                Ok(Reply::FolderChanges(ch)) => self.apply_changes(ch, out).await,
                Err(e) if e.code == Some("NONEXISTENT") => {
                    // The folder itself went away (deleted elsewhere).
                    out.extend_from_slice(b"* BYE the selected mailbox was deleted\r\n");
                    self.selected = None;
                    self.closing = true;
                    return;
                }
                _ => {
                    // Try again at the next command.
                    self.news = true;
                }
            }
        }
        if std::mem::take(&mut self.exists_changed)
            && let Some(sel) = self.selected.as_ref()
        {
            out.extend_from_slice(format!("* {} EXISTS\r\n", sel.msgs.len()).as_bytes());
        }
        if expunge_allowed {
            self.report_expunged(out);
        }
    }

    async fn apply_changes(
        &mut self,
        ch: cofre_storage::mailbox::FolderChanges,
        out: &mut Vec<u8>,
    ) {
        let Some(sel) = self.selected.as_mut() else {
            return;
        };
        if ch.uid_validity != 0 && ch.uid_validity != sel.uid_validity {
            // The folder was put back from a backup: the client's UIDs
            // mean nothing now, and only a new SELECT can say so.
            out.extend_from_slice(
                b"* BYE [UNAVAILABLE] the mailbox was restored from a backup; select it again\r\n",
            );
            self.selected = None;
            self.closing = true;
            return;
        }
        for u in &ch.vanished {
            if sel.position(u.get()).is_some() {
                sel.gone.insert(u.get());
            }
        }
        let before = sel.msgs.len();
        let max = sel.max_uid();
        let mut fresh: Vec<Msg> = Vec::new();
        let mut flagged: Vec<(u32, EmailId, ModSeq)> = Vec::new();
        for &(uid, modseq, email) in &ch.changed {
            let uid = uid.get();
            if uid > max {
                fresh.push(Msg { uid, email, modseq });
            } else if let Some(i) = sel.position(uid)
                && modseq > sel.msgs[i].modseq
                && !sel.gone.contains(&uid)
            {
                flagged.push((uid, email, modseq));
            }
        }
        fresh.sort_by_key(|m| m.uid);
        sel.msgs.extend(fresh);
        sel.modseq = sel.modseq.max(ch.highest);
        if sel.msgs.len() != before {
            self.exists_changed = true;
        }
        if flagged.is_empty() {
            return;
        }
        let ids: Vec<EmailId> = flagged.iter().map(|f| f.1).collect();
        let Ok(sums) = self.summaries(&ids).await else {
            self.news = true;
            return;
        };
        let condstore = self.condstore;
        let Some(sel) = self.selected.as_mut() else {
            return;
        };
        for (uid, email, modseq) in flagged {
            let (Some(i), Some(s)) = (sel.position(uid), sums.get(&email)) else {
                continue;
            };
            sel.msgs[i].modseq = modseq;
            let mut line = format!("* {} FETCH (UID {uid} FLAGS ", i + 1).into_bytes();
            render::flags(&mut line, &s.keywords);
            if condstore {
                line.extend_from_slice(format!(" MODSEQ ({})", s.modseq.max(modseq)).as_bytes());
            }
            line.extend_from_slice(b")\r\n");
            out.extend_from_slice(&line);
        }
    }

    fn report_expunged(&mut self, out: &mut Vec<u8>) {
        let qresync = self.qresync;
        let Some(sel) = self.selected.as_mut() else {
            return;
        };
        if sel.gone.is_empty() {
            return;
        }
        let mut gone: Vec<u32> = sel.gone.drain().collect();
        gone.sort_unstable();
        if qresync {
            sel.msgs.retain(|m| gone.binary_search(&m.uid).is_err());
            out.extend_from_slice(format!("* VANISHED {}\r\n", uid_set(&gone)).as_bytes());
            return;
        }
        // Highest first, so each sequence number is right when it is read.
        for uid in gone.iter().rev() {
            if let Some(i) = sel.position(*uid) {
                sel.msgs.remove(i);
                out.extend_from_slice(format!("* {} EXPUNGE\r\n", i + 1).as_bytes());
            }
        }
    }

    async fn fetch(
        &mut self,
        uid: bool,
        set: &SeqSet,
        mut items: Vec<FetchItem>,
        changed_since: Option<u64>,
        vanished: bool,
        out: &mut Vec<u8>,
    ) -> Res<()> {
        let sel = self.sel()?;
        let idx = sel.resolve(set, uid)?;
        if vanished && let Some(since) = changed_since {
            let r = self
                .call(Op::FolderChanges {
                    session: self.sid()?,
                    folder: sel.id,
                    since,
                })
                .await?;
            if let Reply::FolderChanges(ch) = r {
                let max = sel.max_uid().max(1);
                let v: Vec<u32> = ch
                    .vanished
                    .iter()
                    .map(|u| u.get())
                    .filter(|u| set.contains(*u, max))
                    .collect();
                if !v.is_empty() {
                    out.extend_from_slice(
                        format!("* VANISHED (EARLIER) {}\r\n", uid_set(&v)).as_bytes(),
                    );
                }
            }
        }
        let sel = self.sel()?;
        if uid && !items.contains(&FetchItem::Uid) {
            items.insert(0, FetchItem::Uid);
        }
        if (self.condstore && changed_since.is_some()) && !items.contains(&FetchItem::ModSeq) {
            items.push(FetchItem::ModSeq);
        }
        let mark_seen = !sel.read_only && items.iter().any(sets_seen);
        if mark_seen && !items.contains(&FetchItem::Flags) {
            items.push(FetchItem::Flags);
        }
        let wanted: Vec<(usize, Msg)> = idx
            .iter()
            .map(|&i| (i, sel.msgs[i]))
            .filter(|(_, m)| !sel.gone.contains(&m.uid))
            .collect();
        let ids: Vec<EmailId> = wanted.iter().map(|(_, m)| m.email).collect();
        let mut sums = self.summaries(&ids).await?;
        if mark_seen {
            let unseen: Vec<EmailId> = wanted
                .iter()
                .map(|(_, m)| m.email)
                .filter(|e| {
                    sums.get(e)
                        .is_some_and(|s| !s.keywords.contains(&Keyword::seen()))
                })
                .collect();
            if !unseen.is_empty() {
                let r = self
                    .call(Op::SetKeywords {
                        session: self.sid()?,
                        emails: unseen.clone(),
                        add: vec![Keyword::seen()],
                        remove: Vec::new(),
                    })
                    .await?;
                let modseq = match r {
                    Reply::ModSeq(m) => m,
                    _ => return Err(no(Some("SERVERBUG"), "unexpected reply")),
                };
                for e in &unseen {
                    if let Some(s) = sums.get_mut(e) {
                        s.keywords.push(Keyword::seen());
                        s.keywords.sort();
                        s.modseq = modseq;
                    }
                }
                if let Some(sel) = self.selected.as_mut() {
                    for (i, m) in &wanted {
                        if unseen.contains(&m.email) {
                            sel.msgs[*i].modseq = modseq;
                        }
                    }
                }
                self.own_write(modseq);
            }
        }
        let raw_needed = items.iter().any(needs_raw);
        for (i, m) in wanted {
            let Some(s) = sums.get(&m.email) else {
                continue;
            };
            if changed_since.is_some_and(|c| s.modseq <= c) {
                continue;
            }
            let raw = if raw_needed {
                match self
                    .call(Op::Raw {
                        session: self.sid()?,
                        email: m.email,
                    })
                    .await
                {
                    Ok(Reply::Raw(r)) => Some(r),
                    Err(e) if e.code == Some("NONEXISTENT") => continue,
                    Err(e) => return Err(e),
                    Ok(_) => return Err(no(Some("SERVERBUG"), "unexpected reply")),
                }
            } else {
                None
            };
            self.fetch_one(out, i + 1, &m, s, raw.as_deref(), &items)?;
        }
        Ok(())
    }

    fn fetch_one(
        &self,
        out: &mut Vec<u8>,
        seq: usize,
        m: &Msg,
        s: &EmailSummary,
        raw: Option<&[u8]>,
        items: &[FetchItem],
    ) -> Res<()> {
        let mut line = format!("* {seq} FETCH (").into_bytes();
        let structure = raw.map(cofre_storage::mailbox::structure_of);
        for (n, item) in items.iter().enumerate() {
            if n > 0 {
                line.push(b' ');
            }
            match item {
                FetchItem::Uid => line.extend_from_slice(format!("UID {}", m.uid).as_bytes()),
                FetchItem::Flags => {
                    line.extend_from_slice(b"FLAGS ");
                    render::flags(&mut line, &s.keywords);
                }
                FetchItem::InternalDate => line.extend_from_slice(
                    format!(
                        "INTERNALDATE \"{}\"",
                        crate::date::imap_date_time(s.received_at)
                    )
                    .as_bytes(),
                ),
                FetchItem::Rfc822Size => {
                    line.extend_from_slice(format!("RFC822.SIZE {}", s.size).as_bytes())
                }
                FetchItem::ModSeq => {
                    line.extend_from_slice(format!("MODSEQ ({})", s.modseq).as_bytes())
                }
                FetchItem::EmailId => {
                    line.extend_from_slice(format!("EMAILID (M{})", s.id.0).as_bytes())
                }
                FetchItem::ThreadId => {
                    line.extend_from_slice(format!("THREADID (T{})", s.thread_id.0).as_bytes())
                }
                FetchItem::Envelope => {
                    line.extend_from_slice(b"ENVELOPE ");
                    render::envelope(&mut line, s, self.utf8);
                }
                FetchItem::Body | FetchItem::BodyStructure => {
                    let (Some(raw), Some(st)) = (raw, structure.as_ref()) else {
                        continue;
                    };
                    let ext = *item == FetchItem::BodyStructure;
                    line.extend_from_slice(if ext { b"BODYSTRUCTURE " } else { b"BODY " });
                    render::body_structure(&mut line, raw, st, ext, self.utf8);
                }
                FetchItem::Rfc822 | FetchItem::Rfc822Header | FetchItem::Rfc822Text => {
                    let (Some(raw), Some(st)) = (raw, structure.as_ref()) else {
                        continue;
                    };
                    let (name, text) = match item {
                        FetchItem::Rfc822 => ("RFC822", None),
                        FetchItem::Rfc822Header => {
                            ("RFC822.HEADER", Some(crate::parse::SectionText::Header))
                        }
                        _ => ("RFC822.TEXT", Some(crate::parse::SectionText::Text)),
                    };
                    let bytes = render::section(
                        raw,
                        st,
                        &crate::parse::Section {
                            part: Vec::new(),
                            text,
                        },
                    )
                    .unwrap_or_default();
                    line.extend_from_slice(name.as_bytes());
                    line.push(b' ');
                    render::literal(&mut line, &bytes);
                }
                FetchItem::Section {
                    section, partial, ..
                } => {
                    let (Some(raw), Some(st)) = (raw, structure.as_ref()) else {
                        continue;
                    };
                    line.extend_from_slice(
                        format!("BODY[{}]", render::section_name(section)).as_bytes(),
                    );
                    if let Some((off, _)) = partial {
                        line.extend_from_slice(format!("<{off}>").as_bytes());
                    }
                    line.push(b' ');
                    match render::section(raw, st, section) {
                        Some(bytes) => {
                            render::literal(&mut line, render::partial(&bytes, *partial))
                        }
                        None => line.extend_from_slice(b"NIL"),
                    }
                }
                FetchItem::Binary { part, .. } | FetchItem::BinarySize(part) => {
                    let (Some(raw), Some(st)) = (raw, structure.as_ref()) else {
                        continue;
                    };
                    let partial = match item {
                        FetchItem::Binary { partial, .. } => *partial,
                        _ => None,
                    };
                    let decoded = binary(raw, st, part)?;
                    let name = part
                        .iter()
                        .map(u32::to_string)
                        .collect::<Vec<_>>()
                        .join(".");
                    if let FetchItem::BinarySize(_) = item {
                        line.extend_from_slice(
                            format!("BINARY.SIZE[{name}] {}", decoded.len()).as_bytes(),
                        );
                    } else {
                        line.extend_from_slice(format!("BINARY[{name}]").as_bytes());
                        if let Some((off, _)) = partial {
                            line.extend_from_slice(format!("<{off}>").as_bytes());
                        }
                        line.push(b' ');
                        let bytes = render::partial(&decoded, partial);
                        line.extend_from_slice(format!("~{{{}}}\r\n", bytes.len()).as_bytes());
                        line.extend_from_slice(bytes);
                    }
                }
            }
        }
        line.extend_from_slice(b")\r\n");
        out.extend_from_slice(&line);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn store(
        &mut self,
        uid: bool,
        set: &SeqSet,
        unchanged_since: Option<u64>,
        mode: StoreMode,
        silent: bool,
        flags: &[Flag],
        out: &mut Vec<u8>,
    ) -> Res<Vec<u32>> {
        let sel = self.writable()?;
        let idx = sel.resolve(set, uid)?;
        let wanted: Vec<(usize, Msg)> = idx
            .iter()
            .map(|&i| (i, sel.msgs[i]))
            .filter(|(_, m)| !sel.gone.contains(&m.uid))
            .collect();
        let keywords = keywords_of(flags)?;
        let ids: Vec<EmailId> = wanted.iter().map(|(_, m)| m.email).collect();
        if silent && unchanged_since.is_none() && mode != StoreMode::Replace {
            // Nothing to report and nothing to compare: one write.
            if ids.is_empty() || keywords.is_empty() {
                return Ok(Vec::new());
            }
            let (add, remove) = match mode {
                StoreMode::Add => (keywords, Vec::new()),
                _ => (Vec::new(), keywords),
            };
            let Reply::ModSeq(ms) = self
                .call(Op::SetKeywords {
                    session: self.sid()?,
                    emails: ids,
                    add,
                    remove,
                })
                .await?
            else {
                return Err(no(Some("SERVERBUG"), "unexpected reply"));
            };
            if let Some(sel) = self.selected.as_mut() {
                for (i, m) in &wanted {
                    if sel.msgs.get(*i).is_some_and(|x| x.uid == m.uid) {
                        sel.msgs[*i].modseq = ms;
                    }
                }
            }
            self.own_write(ms);
            return Ok(Vec::new());
        }
        let sums = self.summaries(&ids).await?;
        let mut modified = Vec::new();
        // Group emails by the change they need.
        let mut groups: BTreeMap<(Vec<Keyword>, Vec<Keyword>), Vec<EmailId>> = BTreeMap::new();
        let mut touched: Vec<(usize, Msg)> = Vec::new();
        for (i, m) in &wanted {
            let Some(s) = sums.get(&m.email) else {
                continue;
            };
            if unchanged_since.is_some_and(|u| s.modseq > u) {
                modified.push(if uid { m.uid } else { *i as u32 + 1 });
                continue;
            }
            let (add, remove): (Vec<Keyword>, Vec<Keyword>) = match mode {
                StoreMode::Add => (
                    keywords
                        .iter()
                        .filter(|k| !s.keywords.contains(k))
                        .cloned()
                        .collect(),
                    Vec::new(),
                ),
                StoreMode::Remove => (
                    Vec::new(),
                    keywords
                        .iter()
                        .filter(|k| s.keywords.contains(k))
                        .cloned()
                        .collect(),
                ),
                StoreMode::Replace => (
                    keywords
                        .iter()
                        .filter(|k| !s.keywords.contains(k))
                        .cloned()
                        .collect(),
                    s.keywords
                        .iter()
                        .filter(|k| !keywords.contains(k))
                        .cloned()
                        .collect(),
                ),
            };
            touched.push((*i, *m));
            if add.is_empty() && remove.is_empty() {
                continue;
            }
            groups.entry((add, remove)).or_default().push(m.email);
        }
        // What the messages now carry follows from what they carried: no
        // second read.
        let mut now = sums;
        for ((add, remove), emails) in groups {
            let Reply::ModSeq(ms) = self
                .call(Op::SetKeywords {
                    session: self.sid()?,
                    emails: emails.clone(),
                    add: add.clone(),
                    remove: remove.clone(),
                })
                .await?
            else {
                return Err(no(Some("SERVERBUG"), "unexpected reply"));
            };
            for e in emails {
                if let Some(s) = now.get_mut(&e) {
                    s.keywords.retain(|k| !remove.contains(k));
                    s.keywords.extend(add.iter().cloned());
                    s.keywords.sort();
                    s.modseq = ms;
                }
            }
            self.own_write(ms);
        }
        let condstore = self.condstore;
        let Some(sel) = self.selected.as_mut() else {
            return Ok(modified);
        };
        for (i, m) in touched {
            let Some(s) = now.get(&m.email) else {
                continue;
            };
            if i < sel.msgs.len() && sel.msgs[i].uid == m.uid {
                sel.msgs[i].modseq = sel.msgs[i].modseq.max(s.modseq);
            }
            // With UNCHANGEDSINCE every message gets its MODSEQ reported.
            if silent && unchanged_since.is_none() {
                continue;
            }
            let mut line = format!("* {} FETCH (", i + 1).into_bytes();
            if uid {
                line.extend_from_slice(format!("UID {} ", m.uid).as_bytes());
            }
            if !silent {
                line.extend_from_slice(b"FLAGS ");
                render::flags(&mut line, &s.keywords);
                if condstore {
                    line.push(b' ');
                }
            }
            if condstore {
                line.extend_from_slice(format!("MODSEQ ({})", s.modseq).as_bytes());
            }
            while line.last() == Some(&b' ') {
                line.pop();
            }
            line.extend_from_slice(b")\r\n");
            out.extend_from_slice(&line);
        }
        modified.sort_unstable();
        Ok(modified)
    }

    /// Runs a search in the selected folder: sequence indexes of the hits,
    /// in UID order or in `sort` order.
    async fn search(
        &mut self,
        key: &SearchKey,
        sort: Option<&[(bool, SortCriterion)]>,
    ) -> Res<Vec<usize>> {
        let sel = self.sel()?;
        let filter = self.filter(key, sel, 0)?;
        let mut query = Query::in_folder(sel.id, filter);
        let mut cc_sort = None;
        if let Some(criteria) = sort {
            for &(reverse, c) in criteria {
                let key = match c {
                    SortCriterion::Arrival => SortKey::ReceivedAt,
                    SortCriterion::Date => SortKey::SentAt,
                    SortCriterion::From => SortKey::From,
                    SortCriterion::Size => SortKey::Size,
                    SortCriterion::Subject => SortKey::Subject,
                    SortCriterion::To => SortKey::To,
                    SortCriterion::Cc => {
                        // Not an index in storage: sorted here, first.
                        if query.sort.is_empty() {
                            cc_sort = Some(reverse);
                        }
                        continue;
                    }
                };
                query.sort.push(Sort {
                    key,
                    ascending: !reverse,
                });
            }
        }
        let hits = match self
            .call(Op::Search {
                session: self.sid()?,
                query,
            })
            .await?
        {
            Reply::Hits(h) => h,
            _ => return Err(no(Some("SERVERBUG"), "unexpected reply")),
        };
        let sel = self.sel()?;
        let mut idx: Vec<usize> = hits
            .iter()
            .filter_map(|h| h.uid)
            .filter_map(|u| sel.position(u.get()))
            .collect();
        if let Some(reverse) = cc_sort {
            let ids: Vec<EmailId> = idx.iter().map(|&i| sel.msgs[i].email).collect();
            let sums = self.summaries(&ids).await?;
            let sel = self.sel()?;
            let cc = |i: &usize| {
                sums.get(&sel.msgs[*i].email)
                    .and_then(|s| s.cc.first())
                    .map(|a| a.email.to_ascii_lowercase())
                    .unwrap_or_default()
            };
            idx.sort_by(|a, b| {
                let o = cc(a).cmp(&cc(b));
                if reverse { o.reverse() } else { o }
            });
        }
        Ok(idx)
    }

    fn filter(&self, key: &SearchKey, sel: &Selected, depth: usize) -> Res<Filter> {
        if depth > 64 {
            return Err(bad("search nested too deeply"));
        }
        let set_filter = |set: &SeqSet, uid: bool| -> Res<Filter> {
            let idx = sel.resolve(set, uid).or_else(|_| {
                // A sequence set beyond the mailbox matches what exists.
                let n = sel.msgs.len() as u32;
                let clipped: Vec<usize> = set
                    .ranges(n)
                    .into_iter()
                    .flat_map(|(lo, hi)| lo.max(1)..=hi.min(n))
                    .map(|s| s as usize - 1)
                    .collect();
                Ok::<_, No>(clipped)
            })?;
            let uids: Vec<u32> = idx.into_iter().map(|i| sel.msgs[i].uid).collect();
            let mut ranges = Vec::new();
            for u in uids {
                match ranges.last_mut() {
                    Some((_, hi)) if *hi + 1 == u => *hi = u,
                    _ => ranges.push((u, u)),
                }
            }
            Ok(Filter::Uids(ranges))
        };
        Ok(match key {
            SearchKey::All | SearchKey::Old => Filter::All,
            SearchKey::Recent => Filter::Not(Box::new(Filter::All)),
            SearchKey::And(v) => Filter::And(
                v.iter()
                    .map(|k| self.filter(k, sel, depth + 1))
                    .collect::<Res<_>>()?,
            ),
            SearchKey::Or(a, b) => Filter::Or(vec![
                self.filter(a, sel, depth + 1)?,
                self.filter(b, sel, depth + 1)?,
            ]),
            SearchKey::Not(k) => Filter::Not(Box::new(self.filter(k, sel, depth + 1)?)),
            SearchKey::Flag(f, on) => match keyword_of(f) {
                Ok(Some(k)) => {
                    let f = Filter::Keyword(k);
                    if *on { f } else { Filter::Not(Box::new(f)) }
                }
                // A keyword that cannot exist matches nothing.
                _ => {
                    let none = Filter::Not(Box::new(Filter::All));
                    if *on { none } else { Filter::All }
                }
            },
            SearchKey::Text(field, s) => {
                let f = match field.as_str() {
                    "BCC" => TextField::Bcc,
                    "BODY" => TextField::Body,
                    "CC" => TextField::Cc,
                    "FROM" => TextField::From,
                    "SUBJECT" => TextField::Subject,
                    "TO" => TextField::To,
                    _ => TextField::Text,
                };
                if s.is_empty() {
                    Filter::All
                } else {
                    Filter::Contains(f, s.clone())
                }
            }
            SearchKey::Header(name, value) => Filter::Header(name.clone(), value.clone()),
            SearchKey::Date(which, d) => {
                let start = crate::date::days_from_civil(d.0, d.1, d.2) * 86_400;
                match which.as_str() {
                    "BEFORE" => Filter::ReceivedBefore(start),
                    "SINCE" => Filter::ReceivedSince(start),
                    "ON" => Filter::And(vec![
                        Filter::ReceivedSince(start),
                        Filter::ReceivedBefore(start + 86_400),
                    ]),
                    "SENTBEFORE" => Filter::SentDayBefore(day(*d)?),
                    "SENTON" => Filter::SentDayOn(day(*d)?),
                    _ => Filter::SentDaySince(day(*d)?),
                }
            }
            SearchKey::Larger(n) => Filter::Larger(*n),
            SearchKey::Smaller(n) => Filter::Smaller(*n),
            SearchKey::Uid(set) => set_filter(set, true)?,
            SearchKey::Seq(set) => set_filter(set, false)?,
            SearchKey::ModSeq(m) => Filter::ModSeqAtLeast(*m),
        })
    }

    fn answer_search(
        &self,
        uid: bool,
        ret: Option<SearchReturn>,
        idx: &[usize],
        out: &mut Vec<u8>,
        name: &str,
    ) {
        let Ok(sel) = self.sel() else { return };
        let ids: Vec<u32> = idx
            .iter()
            .map(|&i| if uid { sel.msgs[i].uid } else { i as u32 + 1 })
            .collect();
        match ret {
            None => {
                let mut line = format!("* {name}");
                for id in &ids {
                    line.push(' ');
                    line.push_str(&id.to_string());
                }
                line.push_str("\r\n");
                out.extend_from_slice(line.as_bytes());
            }
            Some(r) => {
                let mut line = "* ESEARCH".to_string();
                if uid {
                    line.push_str(" UID");
                }
                if r.min
                    && let Some(m) = ids.iter().min()
                {
                    line.push_str(&format!(" MIN {m}"));
                }
                if r.max
                    && let Some(m) = ids.iter().max()
                {
                    line.push_str(&format!(" MAX {m}"));
                }
                if r.count {
                    line.push_str(&format!(" COUNT {}", ids.len()));
                }
                if r.all && !ids.is_empty() {
                    let mut sorted = ids.clone();
                    if name == "SEARCH" {
                        sorted.sort_unstable();
                        line.push_str(&format!(" ALL {}", uid_set(&sorted)));
                    } else {
                        line.push_str(&format!(
                            " ALL {}",
                            sorted
                                .iter()
                                .map(u32::to_string)
                                .collect::<Vec<_>>()
                                .join(",")
                        ));
                    }
                }
                line.push_str("\r\n");
                out.extend_from_slice(line.as_bytes());
            }
        }
    }

    async fn thread(
        &mut self,
        uid: bool,
        references: bool,
        idx: &[usize],
        out: &mut Vec<u8>,
    ) -> Res<()> {
        let sel = self.sel()?;
        let msgs: Vec<(usize, Msg)> = idx.iter().map(|&i| (i, sel.msgs[i])).collect();
        let ids: Vec<EmailId> = msgs.iter().map(|(_, m)| m.email).collect();
        let sums = self.summaries(&ids).await?;
        let items: Vec<crate::thread::Item> = msgs
            .iter()
            .filter_map(|(i, m)| {
                let s = sums.get(&m.email)?;
                let base = cofre_storage::mailbox::parse::base_subject(&s.subject);
                let plain = s
                    .subject
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
                    .to_lowercase();
                Some(crate::thread::Item {
                    id: if uid { m.uid } else { *i as u32 + 1 },
                    message_id: s.message_id.clone(),
                    references: s
                        .references
                        .iter()
                        .chain(s.in_reply_to.iter())
                        .cloned()
                        .collect(),
                    reply: base != plain,
                    subject: base,
                    date: s.sent_at.unwrap_or(s.received_at),
                })
            })
            .collect();
        let text = if references {
            crate::thread::references(&items)
        } else {
            crate::thread::ordered_subject(&items)
        };
        out.extend_from_slice(format!("* THREAD {text}\r\n").as_bytes());
        Ok(())
    }

    async fn copy(
        &mut self,
        uid: bool,
        set: &SeqSet,
        mailbox: &[u8],
        remove: bool,
        out: &mut Vec<u8>,
    ) -> Res<Option<String>> {
        let sel = if remove {
            self.writable()?
        } else {
            self.sel()?
        };
        let idx = sel.resolve(set, uid)?;
        let uids: Vec<Uid> = idx
            .iter()
            .map(|&i| sel.msgs[i].uid)
            .filter(|u| !sel.gone.contains(u))
            .filter_map(|u| Uid::try_from(u).ok())
            .collect();
        let from = sel.id;
        let name = self.storage_name(mailbox)?;
        let target = self
            .folders()
            .await?
            .into_iter()
            .find(|f| f.name == name)
            .ok_or_else(|| no(Some("TRYCREATE"), "no such mailbox"))?;
        if uids.is_empty() {
            return Ok(None);
        }
        let op = if remove {
            Op::Move {
                session: self.sid()?,
                from,
                uids,
                to: target.id,
            }
        } else {
            Op::Copy {
                session: self.sid()?,
                from,
                uids,
                to: target.id,
            }
        };
        let pairs = match self.call(op).await? {
            Reply::UidPairs(p) => p,
            _ => return Err(no(Some("SERVERBUG"), "unexpected reply")),
        };
        let src: Vec<u32> = pairs.iter().map(|p| p.0.get()).collect();
        let dst: Vec<u32> = pairs.iter().map(|p| p.1.get()).collect();
        let code = format!(
            "COPYUID {} {} {}",
            target.uid_validity,
            uid_set(&src),
            uid_set(&dst)
        );
        if remove {
            out.extend_from_slice(format!("* OK [{code}] moved\r\n").as_bytes());
            self.news = true;
            if target.id == from {
                return Ok(None);
            }
        }
        Ok(Some(code))
    }
}

/// BINARY: a leaf part decoded from its transfer encoding.
fn binary(raw: &[u8], root: &cofre_storage::mailbox::MimePart, part: &[u32]) -> Res<Vec<u8>> {
    if part.is_empty() {
        return Ok(raw.to_vec());
    }
    let (p, path) =
        render::resolve(root, part).ok_or_else(|| no(Some("NONEXISTENT"), "no such part"))?;
    if p.media_type == "multipart" || p.is_message {
        return Err(no(Some("UNKNOWN-CTE"), "BINARY applies to leaf parts only"));
    }
    match p.transfer_encoding.as_deref() {
        None | Some("7bit" | "8bit" | "binary" | "base64" | "quoted-printable") => {}
        Some(_) => return Err(no(Some("UNKNOWN-CTE"), "unknown transfer encoding")),
    }
    cofre_storage::mailbox::part_decoded_of(raw, &path)
        .map_err(|_| no(Some("NONEXISTENT"), "no such part"))
}

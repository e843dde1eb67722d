//! Every IMAP SEARCH key (RFC 9051 §6.4.4) and every JMAP Email
//! FilterCondition (RFC 8621 §4.4.1), expressed in storage's filter language,
//! against a small mailbox whose answers are known.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use cofre_storage::mailbox::{AppendOptions, Filter as F, Query, Sort, SortKey, TextField as T};
use cofre_storage::{Day, FolderId, Keyword, Mailbox, Role};

const M1: &str = "From: Alice Liddell <alice@wonder.land>\r\nTo: bob@example.com\r\n\
Cc: carol@example.com\r\nBcc: dave@secret.example\r\nSubject: Tea party invitation\r\n\
Date: Sun, 10 Mar 2024 10:00:00 +0000\r\nMessage-ID: <m1@wonder.land>\r\nX-Priority: 1 (Highest)\r\n\r\n\
Join us for tea at the Mad Hatter's.\r\n";

const M2: &str = "From: bob@example.com\r\nTo: Alice <alice@wonder.land>\r\n\
Subject: Re: Tea party invitation\r\nDate: Mon, 11 Mar 2024 23:30:00 -0500\r\n\
Message-ID: <m2@example.com>\r\nIn-Reply-To: <m1@wonder.land>\r\n\r\nI'd LOVE to come. Café au lait?\r\n";

fn m3() -> String {
    format!(
        "From: =?utf-8?q?Zo=C3=AB_=C3=9Cnicode?= <zoe@example.org>\r\nTo: team@example.org\r\n\
         Subject: Quarterly report\r\nDate: Mon, 1 Apr 2024 09:00:00 +0200\r\nMessage-ID: <m3@example.org>\r\n\
         MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\nRevenue grew 12%. Invoice #4471 attached.\r\n--b\r\n\
         Content-Type: application/pdf; name=report.pdf\r\nContent-Disposition: attachment; filename=report.pdf\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{}\r\n--b--\r\n",
        "JVBERi0xLjQK".repeat(300)
    )
}

const M4: &str =
    "From: spam@junk.example\r\nTo: bob@example.com\r\nSubject: WIN A PRIZE\r\n\r\nclick here\r\n";

const M5: &str = "From: Alice Liddell <alice@wonder.land>\r\nTo: bob@example.com\r\nSubject: Archived note\r\n\
Date: Sun, 1 Jan 2023 08:00:00 +0000\r\n\r\nold stuff\r\n";

struct Fixture {
    _dir: tempfile::TempDir,
    mb: Mailbox,
    inbox: FolderId,
    archive: FolderId,
}

fn ts(iso: &str) -> i64 {
    cofre_storage::time::parse_iso(iso).unwrap()
}

fn kw(s: &str) -> Keyword {
    Keyword::try_from(s).unwrap()
}

fn fixture() -> Fixture {
    let (dir, mut mb) = common::mailbox();
    let inbox = mb.folder_by_role(Role::Inbox).unwrap().id;
    let archive = mb.folder_by_role(Role::Archive).unwrap().id;
    let add = |mb: &mut Mailbox, f: FolderId, raw: &[u8], k: &[&str], at: &str| {
        mb.append(
            f,
            raw,
            &AppendOptions {
                keywords: k.iter().map(|s| kw(s)).collect(),
                received_at: Some(ts(at)),
                delivery_ref: None,
            },
        )
        .unwrap();
    };
    add(
        &mut mb,
        inbox,
        M1.as_bytes(),
        &["$seen"],
        "2024-03-10T12:00:00Z",
    );
    add(
        &mut mb,
        inbox,
        M2.as_bytes(),
        &["$answered", "$flagged", "$seen"],
        "2024-03-12T05:00:00Z",
    );
    add(
        &mut mb,
        inbox,
        m3().as_bytes(),
        &["$draft", "work"],
        "2024-04-01T08:00:00Z",
    );
    add(
        &mut mb,
        inbox,
        M4.as_bytes(),
        &["$deleted"],
        "2024-05-01T00:00:00Z",
    );
    add(
        &mut mb,
        archive,
        M5.as_bytes(),
        &["$seen"],
        "2023-01-01T09:00:00Z",
    );
    Fixture {
        _dir: dir,
        mb,
        inbox,
        archive,
    }
}

impl Fixture {
    /// Subjects of the inbox messages matching, in UID order.
    fn inbox(&self, f: F) -> Vec<String> {
        self.subjects(Query::in_folder(self.inbox, f))
    }

    /// Subjects of all emails matching, in id order.
    fn all(&self, f: F) -> Vec<String> {
        self.subjects(Query::everywhere(f))
    }

    fn subjects(&self, q: Query) -> Vec<String> {
        let hits = self.mb.search(&q).unwrap();
        let ids: Vec<_> = hits.iter().map(|h| h.email_id).collect();
        self.mb
            .summaries(&ids)
            .unwrap()
            .into_iter()
            .map(|s| s.subject)
            .collect()
    }
}

const TEA: &str = "Tea party invitation";
const RE_TEA: &str = "Re: Tea party invitation";
const REPORT: &str = "Quarterly report";
const PRIZE: &str = "WIN A PRIZE";
const NOTE: &str = "Archived note";

fn not(f: F) -> F {
    F::Not(Box::new(f))
}

#[test]
fn imap_flag_keys() {
    let fx = fixture();
    assert_eq!(fx.inbox(F::All), [TEA, RE_TEA, REPORT, PRIZE]);
    assert_eq!(fx.inbox(F::Keyword(Keyword::answered())), [RE_TEA]);
    assert_eq!(
        fx.inbox(not(F::Keyword(Keyword::answered()))),
        [TEA, REPORT, PRIZE]
    );
    assert_eq!(fx.inbox(F::Keyword(Keyword::deleted())), [PRIZE]);
    assert_eq!(
        fx.inbox(not(F::Keyword(Keyword::deleted()))),
        [TEA, RE_TEA, REPORT]
    );
    assert_eq!(fx.inbox(F::Keyword(Keyword::draft())), [REPORT]);
    assert_eq!(
        fx.inbox(not(F::Keyword(Keyword::draft()))),
        [TEA, RE_TEA, PRIZE]
    );
    assert_eq!(fx.inbox(F::Keyword(Keyword::flagged())), [RE_TEA]);
    assert_eq!(
        fx.inbox(not(F::Keyword(Keyword::flagged()))),
        [TEA, REPORT, PRIZE]
    );
    assert_eq!(fx.inbox(F::Keyword(Keyword::seen())), [TEA, RE_TEA]);
    assert_eq!(fx.inbox(not(F::Keyword(Keyword::seen()))), [REPORT, PRIZE]);
    // KEYWORD / UNKEYWORD, case-insensitively.
    assert_eq!(fx.inbox(F::Keyword(kw("WORK"))), [REPORT]);
    assert_eq!(fx.inbox(not(F::Keyword(kw("work")))), [TEA, RE_TEA, PRIZE]);
}

#[test]
fn imap_address_and_text_keys_are_case_insensitive_substrings() {
    let fx = fixture();
    assert_eq!(fx.inbox(F::Contains(T::From, "ALICE@wonder".into())), [TEA]);
    assert_eq!(fx.inbox(F::Contains(T::From, "liddell".into())), [TEA]);
    assert_eq!(
        fx.inbox(F::Contains(T::From, "zoë ü".into())),
        [REPORT],
        "decoded, Unicode case folding"
    );
    assert_eq!(fx.inbox(F::Contains(T::To, "bob@".into())), [TEA, PRIZE]);
    assert_eq!(fx.inbox(F::Contains(T::Cc, "carol".into())), [TEA]);
    assert_eq!(
        fx.inbox(F::Contains(T::Bcc, "secret.example".into())),
        [TEA]
    );
    assert_eq!(
        fx.inbox(F::Contains(T::Subject, "PARTY".into())),
        [TEA, RE_TEA]
    );
    assert_eq!(
        fx.inbox(F::Contains(T::Subject, "rty inv".into())),
        [TEA, RE_TEA],
        "mid-word substring"
    );
    assert_eq!(fx.inbox(F::Contains(T::Body, "love to".into())), [RE_TEA]);
    assert_eq!(fx.inbox(F::Contains(T::Body, "CAFÉ".into())), [RE_TEA]);
    assert_eq!(fx.inbox(F::Contains(T::Body, "#4471".into())), [REPORT]);
    assert_eq!(
        fx.inbox(F::Contains(T::Body, "Quarterly".into())),
        Vec::<String>::new(),
        "BODY excludes headers"
    );
    assert_eq!(
        fx.inbox(F::Contains(T::Text, "Quarterly".into())),
        [REPORT],
        "TEXT includes headers"
    );
    assert_eq!(fx.inbox(F::Contains(T::Text, "hatter".into())), [TEA]);
    // Needles shorter than a trigram still work.
    assert_eq!(
        fx.inbox(F::Contains(T::Subject, "RE".into())),
        [RE_TEA, REPORT]
    );
    assert_eq!(fx.inbox(F::Contains(T::Subject, "iz".into())), [PRIZE]);
    assert_eq!(fx.inbox(F::Contains(T::Body, "12".into())), [REPORT]);
    // Needles across words: found through their words' trigrams, then the
    // exact text decides.
    assert_eq!(
        fx.inbox(F::Contains(T::Body, "us for tea at".into())),
        [TEA]
    );
    assert_eq!(
        fx.inbox(F::Contains(T::Body, "tea for us".into())),
        Vec::<String>::new()
    );
    assert_eq!(
        fx.inbox(F::Contains(T::Body, "o c".into())),
        [RE_TEA],
        "no whole trigram: scan"
    );
    // Quotes in the needle are data, not query syntax.
    assert_eq!(fx.inbox(F::Contains(T::Body, "Hatter's".into())), [TEA]);
    assert_eq!(
        fx.inbox(F::Contains(T::Body, "\"x\" OR y*".into())),
        Vec::<String>::new()
    );
}

#[test]
fn imap_header_key() {
    let fx = fixture();
    assert_eq!(
        fx.inbox(F::Header("x-priority".into(), "highest".into())),
        [TEA]
    );
    assert_eq!(
        fx.inbox(F::Header("X-Priority".into(), "".into())),
        [TEA],
        "empty string: field exists"
    );
    assert_eq!(
        fx.inbox(F::Header("In-Reply-To".into(), "m1@wonder".into())),
        [RE_TEA]
    );
    assert_eq!(
        fx.inbox(F::Header("Subject".into(), "1".into())),
        Vec::<String>::new()
    );
    assert_eq!(
        fx.inbox(F::Header("Date".into(), "".into())),
        [TEA, RE_TEA, REPORT]
    );
}

#[test]
fn imap_date_and_size_keys() {
    let fx = fixture();
    // BEFORE / ON / SINCE compare the internal date by day (the bridge turns
    // a day into [00:00, next 00:00) UTC).
    assert_eq!(
        fx.inbox(F::ReceivedBefore(ts("2024-03-12T00:00:00Z"))),
        [TEA]
    );
    assert_eq!(
        fx.inbox(F::And(vec![
            F::ReceivedSince(ts("2024-03-12T00:00:00Z")),
            F::ReceivedBefore(ts("2024-03-13T00:00:00Z")),
        ])),
        [RE_TEA]
    );
    assert_eq!(
        fx.inbox(F::ReceivedSince(ts("2024-04-01T00:00:00Z"))),
        [REPORT, PRIZE]
    );
    // SENT* use the Date header's own day: 23:30 -0500 on the 11th is the
    // 11th, although it is the 12th in UTC.
    let day = |s: &str| Day::try_from(s).unwrap();
    assert_eq!(fx.inbox(F::SentDayOn(day("2024-03-11"))), [RE_TEA]);
    assert_eq!(fx.inbox(F::SentDayBefore(day("2024-03-11"))), [TEA]);
    assert_eq!(
        fx.inbox(F::SentDaySince(day("2024-03-11"))),
        [RE_TEA, REPORT]
    );
    assert_eq!(
        fx.inbox(F::SentSince(ts("2024-03-12T00:00:00Z"))),
        [RE_TEA, REPORT],
        "UTC comparison"
    );
    assert_eq!(
        fx.inbox(F::SentBefore(ts("2024-04-01T07:00:01Z"))),
        [TEA, RE_TEA, REPORT]
    );
    assert_eq!(
        fx.inbox(F::SentBefore(ts("2024-04-01T07:00:00Z"))),
        [TEA, RE_TEA],
        "strict"
    );
    // LARGER / SMALLER are strict.
    let size = fx
        .mb
        .summaries(&[fx
            .mb
            .search(&Query::in_folder(
                fx.inbox,
                F::Contains(T::Subject, "WIN".into()),
            ))
            .unwrap()[0]
            .email_id])
        .unwrap()[0]
        .size;
    assert_eq!(fx.inbox(F::Larger(1000)), [REPORT]);
    assert_eq!(fx.inbox(F::Smaller(size)), Vec::<String>::new());
    assert_eq!(fx.inbox(F::Smaller(size + 1)), [PRIZE]);
    assert_eq!(fx.inbox(F::Larger(size - 1)).len(), 4);
}

#[test]
fn imap_uid_modseq_and_boolean_keys() {
    let mut fx = fixture();
    assert_eq!(fx.inbox(F::Uids(vec![(2, 3)])), [RE_TEA, REPORT]);
    assert_eq!(
        fx.inbox(F::Uids(vec![(1, 1), (4, 4_000_000)])),
        [TEA, PRIZE]
    );
    assert!(
        fx.mb
            .search(&Query::everywhere(F::Uids(vec![(1, 1)])))
            .is_err(),
        "UIDs need a folder"
    );
    // OR, NOT and nesting: (OR FROM alice SUBJECT prize) AND NOT SEEN
    assert_eq!(
        fx.inbox(F::And(vec![
            F::Or(vec![
                F::Contains(T::From, "alice".into()),
                F::Contains(T::Subject, "prize".into())
            ]),
            not(F::Keyword(Keyword::seen())),
        ])),
        [PRIZE]
    );
    assert_eq!(
        fx.inbox(not(F::Or(vec![
            F::Keyword(Keyword::seen()),
            not(F::HasAttachment(true))
        ]))),
        [REPORT]
    );
    assert_eq!(fx.inbox(F::Or(vec![])), Vec::<String>::new());
    assert_eq!(fx.inbox(F::And(vec![])).len(), 4);
    // MODSEQ: only what changed after a point.
    let before = fx.mb.highest_modseq().unwrap();
    let id = fx
        .mb
        .search(&Query::in_folder(fx.inbox, F::Uids(vec![(1, 1)])))
        .unwrap()[0]
        .email_id;
    fx.mb
        .set_keywords(&[id], &[Keyword::flagged()], &[])
        .unwrap();
    assert_eq!(fx.inbox(F::ModSeqAtLeast(before + 1)), [TEA]);
    assert_eq!(fx.all(F::ModSeqAtLeast(before + 1)), [TEA]);
}

#[test]
fn regex_search() {
    let fx = fixture();
    assert_eq!(
        fx.inbox(F::Regex(T::Body, r"Invoice #\d{4}\b".into())),
        [REPORT]
    );
    assert_eq!(
        fx.inbox(F::Regex(T::Subject, r"(?i)^re:\s".into())),
        [RE_TEA]
    );
    assert_eq!(
        fx.inbox(F::Regex(
            T::From,
            r"@(wonder\.land|junk\.example)>?$".into()
        )),
        [TEA, PRIZE]
    );
    let err = fx
        .mb
        .search(&Query::in_folder(
            fx.inbox,
            F::Regex(T::Body, "(unclosed".into()),
        ))
        .unwrap_err();
    assert!(err.to_string().contains("regular expression"), "{err}");
}

#[test]
fn jmap_mailbox_date_size_and_keyword_conditions() {
    let fx = fixture();
    assert_eq!(fx.all(F::InFolder(fx.archive)), [NOTE]);
    assert_eq!(fx.all(F::InFolderOtherThan(vec![fx.inbox])), [NOTE]);
    assert_eq!(
        fx.all(F::InFolderOtherThan(vec![fx.archive])),
        [TEA, RE_TEA, REPORT, PRIZE]
    );
    // before is strict, after is inclusive (RFC 8621: receivedAt < / >=).
    assert_eq!(
        fx.all(F::ReceivedBefore(ts("2024-03-10T12:00:00Z"))),
        [NOTE]
    );
    assert_eq!(
        fx.all(F::ReceivedSince(ts("2024-05-01T00:00:00Z"))),
        [PRIZE]
    );
    // minSize n is size >= n, maxSize n is size < n.
    assert_eq!(fx.all(F::Larger(3000 - 1)), [REPORT]);
    assert_eq!(fx.all(F::Smaller(50)), Vec::<String>::new());
    assert_eq!(fx.all(F::Smaller(150)), [PRIZE, NOTE]);
    assert_eq!(fx.all(F::Keyword(Keyword::seen())), [TEA, RE_TEA, NOTE]);
    assert_eq!(fx.all(not(F::Keyword(Keyword::seen()))), [REPORT, PRIZE]);
    assert_eq!(fx.all(F::HasAttachment(true)), [REPORT]);
    assert_eq!(fx.all(F::HasAttachment(false)), [TEA, RE_TEA, PRIZE, NOTE]);
}

#[test]
fn jmap_thread_keyword_conditions() {
    let fx = fixture();
    // TEA and RE_TEA are one thread; both $seen, only the reply $flagged.
    assert_eq!(
        fx.all(F::AllInThreadHaveKeyword(Keyword::seen())),
        [TEA, RE_TEA, NOTE]
    );
    assert_eq!(
        fx.all(F::AllInThreadHaveKeyword(Keyword::flagged())),
        Vec::<String>::new()
    );
    assert_eq!(
        fx.all(F::SomeInThreadHaveKeyword(Keyword::flagged())),
        [TEA, RE_TEA]
    );
    assert_eq!(
        fx.all(F::NoneInThreadHaveKeyword(Keyword::flagged())),
        [REPORT, PRIZE, NOTE]
    );
}

#[test]
fn jmap_text_conditions_match_words() {
    let fx = fixture();
    assert_eq!(
        fx.all(F::Words(T::Text, "tea hatter".into())),
        [TEA],
        "all words, any order"
    );
    assert_eq!(
        fx.all(F::Words(T::Text, "invitation".into())),
        [TEA, RE_TEA]
    );
    assert_eq!(
        fx.all(F::Words(T::Subject, "REPORT quarterly".into())),
        [REPORT]
    );
    assert_eq!(
        fx.all(F::Words(T::Body, "cafe".into())),
        [RE_TEA],
        "diacritics folded"
    );
    assert_eq!(
        fx.all(F::Words(T::Body, "vit".into())),
        Vec::<String>::new(),
        "words, not substrings"
    );
    assert_eq!(fx.all(F::Words(T::From, "liddell".into())), [TEA, NOTE]);
    assert_eq!(fx.all(F::Words(T::To, "team".into())), [REPORT]);
    assert_eq!(fx.all(F::Words(T::Cc, "carol".into())), [TEA]);
    assert_eq!(fx.all(F::Words(T::Bcc, "dave".into())), [TEA]);
    assert_eq!(
        fx.all(F::Words(T::Body, "\"quoted\" AND OR NOT".into())),
        Vec::<String>::new()
    );
}

#[test]
fn sorting_collapsing_and_paging() {
    let fx = fixture();
    let sorted = |key: SortKey, ascending: bool| {
        fx.subjects(Query {
            sort: vec![Sort { key, ascending }],
            ..Query::everywhere(F::All)
        })
    };
    assert_eq!(
        sorted(SortKey::ReceivedAt, false),
        [PRIZE, REPORT, RE_TEA, TEA, NOTE]
    );
    assert_eq!(sorted(SortKey::Size, false)[0], REPORT);
    assert_eq!(
        sorted(SortKey::Subject, true),
        [NOTE, REPORT, TEA, RE_TEA, PRIZE]
    );
    assert_eq!(
        sorted(SortKey::From, true),
        [TEA, NOTE, RE_TEA, PRIZE, REPORT]
    );
    assert_eq!(
        sorted(SortKey::Keyword(Keyword::seen()), true),
        [REPORT, PRIZE, TEA, RE_TEA, NOTE]
    );
    let q = Query {
        sort: vec![Sort {
            key: SortKey::ReceivedAt,
            ascending: true,
        }],
        collapse_threads: true,
        ..Query::everywhere(F::All)
    };
    assert_eq!(fx.subjects(q.clone()), [NOTE, TEA, REPORT, PRIZE]);
    assert_eq!(
        fx.subjects(Query {
            position: 1,
            limit: Some(2),
            ..q
        }),
        [TEA, REPORT]
    );
    assert!(
        fx.mb
            .search(&Query {
                sort: vec![Sort {
                    key: SortKey::Uid,
                    ascending: true
                }],
                ..Query::everywhere(F::All)
            })
            .is_err()
    );
}

/// Mail appended one message at a time waits on the index backlog; a search
/// indexes it first, destroying mail still waiting leaves nothing behind,
/// bulk appends are indexed at once, and the backlog survives a reopen.
#[test]
fn the_index_backlog_never_hides_mail_from_search() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.sqlite");
    let key = cofre_storage::SecretKey::generate();
    let mut mb = Mailbox::create(&path, &key, Default::default()).unwrap();
    let inbox = mb.folder_by_role(Role::Inbox).unwrap().id;
    let msg = |word: &str| format!("Subject: {word}\r\n\r\nthe word is {word}\r\n");
    let find = |mb: &Mailbox, word: &str| {
        let substring = mb
            .search(&Query::everywhere(F::Contains(T::Body, word.into())))
            .unwrap()
            .len();
        let words = mb
            .search(&Query::everywhere(F::Words(T::Body, word.into())))
            .unwrap()
            .len();
        assert_eq!(substring, words, "{word}: substring and word index agree");
        substring
    };
    let opts = AppendOptions::default();
    for w in ["alpha", "bravo", "charlie"] {
        mb.append(inbox, msg(w).as_bytes(), &opts).unwrap();
    }
    assert_eq!(mb.index_backlog(), 3);

    // Destroy "charlie" before it was ever indexed; its id is the next one
    // handed out again, to "delta".
    let uids = mb.folder_index(inbox).unwrap();
    mb.destroy_emails(&[uids[2].1]).unwrap();
    mb.append(inbox, msg("delta").as_bytes(), &opts).unwrap();
    assert_eq!(find(&mb, "alpha"), 1);
    assert_eq!(mb.index_backlog(), 0, "the search indexed the backlog");
    assert_eq!(find(&mb, "charlie"), 0);
    assert_eq!(find(&mb, "delta"), 1);

    // Destroying indexed mail takes it out of the indexes.
    let uids = mb.folder_index(inbox).unwrap();
    mb.destroy_emails(&[uids[0].1]).unwrap();
    assert_eq!(find(&mb, "alpha"), 0);
    assert_eq!(find(&mb, "bravo"), 1);

    // A bulk append is indexed in its own transaction.
    let bulk: Vec<String> = (0..20).map(|i| msg(&format!("bulk{i}x"))).collect();
    let batch: Vec<(&[u8], AppendOptions)> =
        bulk.iter().map(|m| (m.as_bytes(), opts.clone())).collect();
    mb.append_batch(inbox, &batch).unwrap();
    assert_eq!(mb.index_backlog(), 0);
    assert_eq!(find(&mb, "bulk7x"), 1);

    // The backlog is in the file, not only in memory.
    mb.append(inbox, msg("echo").as_bytes(), &opts).unwrap();
    drop(mb);
    let mb = Mailbox::open(&path, &key, Default::default()).unwrap();
    assert_eq!(mb.index_backlog(), 1);
    assert_eq!(find(&mb, "echo"), 1);
    assert_eq!(mb.flush_index().unwrap(), 0);
}

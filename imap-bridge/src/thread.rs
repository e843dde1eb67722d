//! THREAD (RFC 5256): ORDEREDSUBJECT and REFERENCES over header summaries.

use std::collections::HashMap;

/// A message to thread.
#[derive(Debug, Clone)]
pub struct Item {
    /// Its sequence number or UID, as the answer shows it.
    pub id: u32,
    /// Its Message-ID.
    pub message_id: Option<String>,
    /// References, then In-Reply-To.
    pub references: Vec<String>,
    /// Base subject.
    pub subject: String,
    /// Whether the subject had a reply or forward prefix (`Re:`, `Fwd:`).
    pub reply: bool,
    /// Sent date (or internal date), Unix seconds.
    pub date: i64,
}

struct Node {
    id: Option<u32>,
    date: i64,
    parent: Option<usize>,
    children: Vec<usize>,
}

fn chain(nodes: &[Node], n: usize, out: &mut String) {
    let node = &nodes[n];
    if let Some(id) = node.id {
        out.push_str(&id.to_string());
    }
    match node.children.as_slice() {
        [] => {}
        [only] => {
            if node.id.is_some() {
                out.push(' ');
            }
            chain(nodes, *only, out);
        }
        many => {
            if node.id.is_some() {
                out.push(' ');
            }
            for c in many {
                out.push('(');
                chain(nodes, *c, out);
                out.push(')');
            }
        }
    }
}

fn render(nodes: &[Node], roots: &[usize]) -> String {
    let mut out = String::new();
    for &r in roots {
        out.push('(');
        chain(nodes, r, &mut out);
        out.push(')');
    }
    out
}

/// ORDEREDSUBJECT: messages grouped by base subject; each group's first
/// message is the parent of the others; groups ordered by that message.
pub fn ordered_subject(items: &[Item]) -> String {
    let mut sorted: Vec<&Item> = items.iter().collect();
    sorted.sort_by(|a, b| {
        a.subject
            .cmp(&b.subject)
            .then(a.date.cmp(&b.date))
            .then(a.id.cmp(&b.id))
    });
    let mut nodes: Vec<Node> = Vec::new();
    let mut roots: Vec<usize> = Vec::new();
    let mut last_subject: Option<&str> = None;
    for it in sorted {
        let n = nodes.len();
        nodes.push(Node {
            id: Some(it.id),
            date: it.date,
            parent: None,
            children: Vec::new(),
        });
        match (last_subject, roots.last()) {
            (Some(s), Some(&r)) if s == it.subject => {
                nodes[n].parent = Some(r);
                nodes[r].children.push(n);
            }
            _ => {
                roots.push(n);
                last_subject = Some(&it.subject);
            }
        }
    }
    roots.sort_by_key(|&r| (nodes[r].date, nodes[r].id));
    render(&nodes, &roots)
}

fn is_ancestor(nodes: &[Node], maybe: usize, of: usize) -> bool {
    let mut cur = Some(of);
    let mut steps = 0;
    while let Some(c) = cur {
        if c == maybe {
            return true;
        }
        steps += 1;
        if steps > nodes.len() {
            return true;
        }
        cur = nodes[c].parent;
    }
    false
}

fn link(nodes: &mut [Node], parent: usize, child: usize) {
    if parent == child || is_ancestor(nodes, child, parent) {
        return;
    }
    if let Some(old) = nodes[child].parent {
        nodes[old].children.retain(|&c| c != child);
    }
    nodes[child].parent = Some(parent);
    nodes[parent].children.push(child);
}

/// A new empty container; its index.
fn empty(nodes: &mut Vec<Node>) -> usize {
    nodes.push(Node {
        id: None,
        date: i64::MAX,
        parent: None,
        children: Vec::new(),
    });
    nodes.len() - 1
}

/// REFERENCES: parent/child links from References and In-Reply-To, empty
/// containers pruned, threads with the same base subject gathered, siblings
/// and threads in date order (RFC 5256).
pub fn references(items: &[Item]) -> String {
    let mut nodes: Vec<Node> = Vec::new();
    let mut by_id: HashMap<String, usize> = HashMap::new();
    let mut container = |nodes: &mut Vec<Node>, id: &str| -> usize {
        *by_id.entry(id.to_string()).or_insert_with(|| empty(nodes))
    };
    for it in items {
        let own = match &it.message_id {
            Some(mid) => {
                let c = container(&mut nodes, mid);
                if nodes[c].id.is_some() {
                    // A duplicate Message-ID: a container of its own.
                    empty(&mut nodes)
                } else {
                    c
                }
            }
            None => empty(&mut nodes),
        };
        nodes[own].id = Some(it.id);
        nodes[own].date = it.date;
        let mut prev: Option<usize> = None;
        for r in &it.references {
            let c = container(&mut nodes, r);
            if let Some(p) = prev
                && nodes[c].parent.is_none()
            {
                link(&mut nodes, p, c);
            }
            prev = Some(c);
        }
        if let Some(p) = prev {
            link(&mut nodes, p, own);
        }
    }
    // A container's date is its message's, or its earliest child's.
    fn date_of(nodes: &[Node], n: usize, depth: usize) -> i64 {
        if nodes[n].id.is_some() || depth > 1000 {
            return nodes[n].date;
        }
        nodes[n]
            .children
            .iter()
            .map(|&c| date_of(nodes, c, depth + 1))
            .min()
            .unwrap_or(i64::MAX)
    }
    // Prune empty containers: drop childless ones, promote the children of
    // the others (at the root only when there is a single child).
    fn prune(nodes: &mut Vec<Node>, list: Vec<usize>, at_root: bool, depth: usize) -> Vec<usize> {
        let mut out = Vec::new();
        for n in list {
            let children = std::mem::take(&mut nodes[n].children);
            let children = if depth < 1000 {
                prune(nodes, children, false, depth + 1)
            } else {
                children
            };
            if nodes[n].id.is_none() {
                if children.is_empty() {
                    continue;
                }
                if !at_root || children.len() == 1 {
                    out.extend(children);
                    continue;
                }
            }
            nodes[n].children = children;
            out.push(n);
        }
        out
    }
    let roots: Vec<usize> = (0..nodes.len())
        .filter(|&n| nodes[n].parent.is_none())
        .collect();
    let roots = prune(&mut nodes, roots, true, 0);
    let by_id: HashMap<u32, &Item> = items.iter().map(|i| (i.id, i)).collect();
    let mut roots = gather_by_subject(&mut nodes, roots, &by_id);
    let dates: Vec<i64> = (0..nodes.len()).map(|n| date_of(&nodes, n, 0)).collect();
    for n in 0..nodes.len() {
        let mut c = std::mem::take(&mut nodes[n].children);
        c.sort_by_key(|&x| (dates[x], nodes[x].id));
        nodes[n].children = c;
    }
    roots.sort_by_key(|&x| (dates[x], nodes[x].id));
    render(&nodes, &roots)
}

/// RFC 5256 step 5: root threads whose base subjects are equal become one
/// thread — under the one that is not a reply, or under a new empty
/// container.
fn gather_by_subject(
    nodes: &mut Vec<Node>,
    roots: Vec<usize>,
    items: &HashMap<u32, &Item>,
) -> Vec<usize> {
    let subject = |nodes: &Vec<Node>, n: usize| -> Option<(String, bool)> {
        let id = nodes[n]
            .id
            .or_else(|| nodes[n].children.first().and_then(|&c| nodes[c].id))?;
        let it = items.get(&id)?;
        (!it.subject.is_empty()).then(|| (it.subject.clone(), it.reply))
    };
    let mut table: HashMap<String, usize> = HashMap::new();
    for &r in &roots {
        let Some((subj, reply)) = subject(nodes, r) else {
            continue;
        };
        match table.get(&subj) {
            None => {
                table.insert(subj, r);
            }
            Some(&e) => {
                let e_reply = subject(nodes, e).is_some_and(|x| x.1);
                let better = (nodes[e].id.is_some() && nodes[r].id.is_none())
                    || (nodes[e].id.is_some() && nodes[r].id.is_some() && e_reply && !reply);
                if better {
                    table.insert(subj, r);
                }
            }
        }
    }
    let mut kept: Vec<usize> = Vec::new();
    let mut absorbed = std::collections::HashSet::new();
    for r in roots {
        if absorbed.contains(&r) {
            continue;
        }
        let Some((subj, reply)) = subject(nodes, r) else {
            kept.push(r);
            continue;
        };
        let Some(&e) = table.get(&subj) else {
            kept.push(r);
            continue;
        };
        if e == r {
            kept.push(r);
            continue;
        }
        absorbed.insert(r);
        let e_dummy = nodes[e].id.is_none();
        let r_dummy = nodes[r].id.is_none();
        if e_dummy && r_dummy {
            let moved = std::mem::take(&mut nodes[r].children);
            for &c in &moved {
                nodes[c].parent = Some(e);
            }
            nodes[e].children.extend(moved);
        } else if e_dummy || (reply && !subject(nodes, e).is_some_and(|x| x.1)) {
            nodes[r].parent = Some(e);
            nodes[e].children.push(r);
        } else {
            // Neither is the other's reply: both under a new container.
            let d = empty(nodes);
            for x in [e, r] {
                nodes[x].parent = Some(d);
                nodes[d].children.push(x);
            }
            table.insert(subj, d);
            absorbed.insert(e);
            match kept.iter().position(|&k| k == e) {
                Some(p) => kept[p] = d,
                None => kept.push(d),
            }
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: u32, mid: &str, refs: &[&str], subject: &str, date: i64) -> Item {
        Item {
            id,
            message_id: Some(mid.into()),
            references: refs.iter().map(|s| s.to_string()).collect(),
            subject: subject.into(),
            reply: false,
            date,
        }
    }

    #[test]
    fn threads() {
        let items = vec![
            item(1, "a", &[], "x", 1),
            item(2, "b", &["a"], "x", 2),
            item(3, "c", &["a"], "x", 3),
            item(4, "d", &[], "y", 4),
            item(5, "e", &["a", "b"], "x", 5),
        ];
        assert_eq!(references(&items), "(1 (2 5)(3))(4)");
        assert_eq!(ordered_subject(&items), "(1 (2)(3)(5))(4)");
        // A missing parent with two replies stays as an empty root.
        let orphans = vec![item(1, "b", &["zz"], "q", 1), item(2, "c", &["zz"], "q", 2)];
        assert_eq!(references(&orphans), "((1)(2))");
        // Same base subject, no references: a reply goes under the original;
        // two originals go under a new container.
        let mut reply = item(2, "r", &[], "plan", 2);
        reply.reply = true;
        assert_eq!(references(&[item(1, "o", &[], "plan", 1), reply]), "(1 2)");
        assert_eq!(
            references(&[item(1, "o", &[], "plan", 1), item(2, "p", &[], "plan", 2)]),
            "((1)(2))"
        );
        // Loops in references do not hang or panic.
        let looped = vec![item(1, "a", &["b"], "", 1), item(2, "b", &["a"], "", 2)];
        assert!(!references(&looped).is_empty());
    }
}

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
/// containers pruned, siblings and threads in date order. (Merging of
/// separate threads by subject, step 5 of RFC 5256, is not done.)
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
    let mut roots = prune(&mut nodes, roots, true, 0);
    let dates: Vec<i64> = (0..nodes.len()).map(|n| date_of(&nodes, n, 0)).collect();
    for n in 0..nodes.len() {
        let mut c = std::mem::take(&mut nodes[n].children);
        c.sort_by_key(|&x| (dates[x], nodes[x].id));
        nodes[n].children = c;
    }
    roots.sort_by_key(|&x| (dates[x], nodes[x].id));
    render(&nodes, &roots)
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
        // Loops in references do not hang or panic.
        let looped = vec![item(1, "a", &["b"], "", 1), item(2, "b", &["a"], "", 2)];
        assert!(!references(&looped).is_empty());
    }
}

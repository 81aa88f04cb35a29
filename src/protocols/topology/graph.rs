//! The overlay graph: nodes by name, undirected simple edges.
//!
//! Nodes are kept sorted by name and addressed by index internally, so
//! builders and metrics work on dense integer adjacency lists while callers
//! speak in node ids. The graph never holds a self-loop or a duplicate
//! edge: `add_edge` refuses both.

use std::collections::BTreeSet;

/// An undirected simple graph over named nodes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Overlay {
    /// Sorted, unique.
    names: Vec<String>,
    /// `neighbours[i]` is sorted and never contains `i`.
    neighbours: Vec<Vec<usize>>,
}

/// The edges two overlays differ by.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EdgeDiff {
    pub added: Vec<(String, String)>,
    pub removed: Vec<(String, String)>,
}

impl EdgeDiff {
    /// Edges added plus edges removed.
    pub fn changed(&self) -> usize {
        self.added.len() + self.removed.len()
    }
}

impl Overlay {
    /// A graph with `names` as nodes and no edges. Duplicate names count once.
    pub fn with_nodes<S: AsRef<str>>(names: impl IntoIterator<Item = S>) -> Overlay {
        let names: BTreeSet<String> = names.into_iter().map(|n| n.as_ref().to_string()).collect();
        let count = names.len();
        Overlay {
            names: names.into_iter().collect(),
            neighbours: vec![Vec::new(); count],
        }
    }

    pub fn node_count(&self) -> usize {
        self.names.len()
    }

    pub fn edge_count(&self) -> usize {
        self.neighbours.iter().map(Vec::len).sum::<usize>() / 2
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn name(&self, index: usize) -> &str {
        &self.names[index]
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.names
            .binary_search_by(|probe| probe.as_str().cmp(name))
            .ok()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.index_of(name).is_some()
    }

    /// Neighbour indices of node `index`, sorted.
    pub fn adjacent(&self, index: usize) -> &[usize] {
        &self.neighbours[index]
    }

    pub fn degree(&self, index: usize) -> usize {
        self.neighbours[index].len()
    }

    /// Neighbour names of `name` (empty for an unknown node), sorted.
    pub fn neighbours_of(&self, name: &str) -> Vec<String> {
        self.index_of(name).map_or_else(Vec::new, |index| {
            self.neighbours[index]
                .iter()
                .map(|&other| self.names[other].clone())
                .collect()
        })
    }

    pub fn has_edge(&self, a: usize, b: usize) -> bool {
        self.neighbours[a].binary_search(&b).is_ok()
    }

    pub fn has_edge_named(&self, a: &str, b: &str) -> bool {
        match (self.index_of(a), self.index_of(b)) {
            (Some(a), Some(b)) => self.has_edge(a, b),
            _ => false,
        }
    }

    /// Adds the edge a–b; false (and no change) for a self-loop or an edge
    /// that exists.
    pub fn add_edge(&mut self, a: usize, b: usize) -> bool {
        if a == b {
            return false;
        }
        let Err(position) = self.neighbours[a].binary_search(&b) else {
            return false;
        };
        self.neighbours[a].insert(position, b);
        let position = self.neighbours[b]
            .binary_search(&a)
            .expect_err("adjacency lists are symmetric");
        self.neighbours[b].insert(position, a);
        true
    }

    /// Removes the edge a–b; false if there was none.
    pub fn remove_edge(&mut self, a: usize, b: usize) -> bool {
        let Ok(position) = self.neighbours[a].binary_search(&b) else {
            return false;
        };
        self.neighbours[a].remove(position);
        let position = self.neighbours[b]
            .binary_search(&a)
            .expect("adjacency lists are symmetric");
        self.neighbours[b].remove(position);
        true
    }

    /// Every edge once, as (lower index, higher index), in order.
    pub fn edges(&self) -> Vec<(usize, usize)> {
        let mut edges = Vec::with_capacity(self.edge_count());
        for (a, list) in self.neighbours.iter().enumerate() {
            edges.extend(list.iter().filter(|&&b| b > a).map(|&b| (a, b)));
        }
        edges
    }

    /// Every edge once, by name, lower name first.
    pub fn named_edges(&self) -> Vec<(String, String)> {
        self.edges()
            .into_iter()
            .map(|(a, b)| (self.names[a].clone(), self.names[b].clone()))
            .collect()
    }

    /// The graph without `name` and its edges (unchanged if absent).
    pub fn without_node(&self, name: &str) -> Overlay {
        let Some(gone) = self.index_of(name) else {
            return self.clone();
        };
        let shift = |index: usize| if index > gone { index - 1 } else { index };
        let mut names = self.names.clone();
        names.remove(gone);
        let neighbours = self
            .neighbours
            .iter()
            .enumerate()
            .filter(|(index, _)| *index != gone)
            .map(|(_, list)| {
                list.iter()
                    .filter(|&&other| other != gone)
                    .map(|&other| shift(other))
                    .collect()
            })
            .collect();
        Overlay { names, neighbours }
    }

    /// The graph with `name` added, without edges (unchanged if present).
    pub fn with_node(&self, name: &str) -> Overlay {
        if self.contains(name) {
            return self.clone();
        }
        let mut graph = Overlay::with_nodes(self.names.iter().map(String::as_str).chain([name]));
        for (a, b) in self.named_edges() {
            let (a, b) = (graph.index_of(&a), graph.index_of(&b));
            graph.add_edge(a.expect("kept node"), b.expect("kept node"));
        }
        graph
    }

    /// Component label of every node (labels are 0.., in order of the
    /// lowest node index in each component) and the component count.
    pub fn components(&self) -> (Vec<usize>, usize) {
        let mut label = vec![usize::MAX; self.node_count()];
        let mut count = 0;
        let mut stack = Vec::new();
        for start in 0..self.node_count() {
            if label[start] != usize::MAX {
                continue;
            }
            label[start] = count;
            stack.push(start);
            while let Some(node) = stack.pop() {
                for &next in &self.neighbours[node] {
                    if label[next] == usize::MAX {
                        label[next] = count;
                        stack.push(next);
                    }
                }
            }
            count += 1;
        }
        (label, count)
    }

    pub fn is_connected(&self) -> bool {
        self.node_count() <= 1 || self.components().1 == 1
    }

    /// What changed from `before` to `self`, by name.
    pub fn diff_from(&self, before: &Overlay) -> EdgeDiff {
        let now: BTreeSet<(String, String)> = self.named_edges().into_iter().collect();
        let then: BTreeSet<(String, String)> = before.named_edges().into_iter().collect();
        EdgeDiff {
            added: now.difference(&then).cloned().collect(),
            removed: then.difference(&now).cloned().collect(),
        }
    }

    /// Checks the graph's own invariants (sorted, symmetric, simple).
    pub fn check_invariants(&self) -> Result<(), String> {
        if !self.names.windows(2).all(|pair| pair[0] < pair[1]) {
            return Err("node names are not sorted and unique".into());
        }
        for (a, list) in self.neighbours.iter().enumerate() {
            if !list.windows(2).all(|pair| pair[0] < pair[1]) {
                return Err(format!(
                    "{}: duplicate or unsorted neighbours",
                    self.names[a]
                ));
            }
            for &b in list {
                if b == a {
                    return Err(format!("{}: self-loop", self.names[a]));
                }
                if b >= self.node_count() || !self.has_edge(b, a) {
                    return Err(format!("{}: asymmetric edge", self.names[a]));
                }
            }
        }
        Ok(())
    }
}

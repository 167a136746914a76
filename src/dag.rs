//! Small graph algorithms over petgraph used by validation (cycles) and by `graph` (phases).

use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};

/// A directed graph over `0..n` with an edge `a -> b` meaning "a depends on b".
pub struct Deps {
    graph: DiGraph<usize, ()>,
}

impl Deps {
    pub fn new(n: usize, edges: impl IntoIterator<Item = (usize, usize)>) -> Deps {
        let mut graph = DiGraph::with_capacity(n, 0);
        for i in 0..n {
            graph.add_node(i);
        }
        for (a, b) in edges {
            graph.update_edge(NodeIndex::new(a), NodeIndex::new(b), ());
        }
        Deps { graph }
    }

    /// One cycle per strongly connected component that has one, as a path that starts and ends at
    /// its lowest-numbered node, e.g. `[2, 5, 7, 2]`. Sorted by that node for stable output.
    pub fn cycles(&self) -> Vec<Vec<usize>> {
        let mut out = Vec::new();
        for scc in tarjan_scc(&self.graph) {
            let start = *scc.iter().min().expect("scc is never empty");
            if scc.len() == 1 && !self.graph.contains_edge(start, start) {
                continue;
            }
            let mut path = vec![start.index()];
            let mut seen = vec![start];
            if self.walk_back(start, start, &scc, &mut path, &mut seen) {
                out.push(path);
            }
        }
        out.sort_by_key(|p| p[0]);
        out
    }

    /// Depth-first search for a way back to `start` inside one component, lowest neighbour first.
    fn walk_back(
        &self,
        at: NodeIndex,
        start: NodeIndex,
        scc: &[NodeIndex],
        path: &mut Vec<usize>,
        seen: &mut Vec<NodeIndex>,
    ) -> bool {
        let mut next: Vec<NodeIndex> = self
            .graph
            .neighbors(at)
            .filter(|n| scc.contains(n))
            .collect();
        next.sort();
        for n in next {
            if n == start {
                path.push(start.index());
                return true;
            }
            if !seen.contains(&n) {
                seen.push(n);
                path.push(n.index());
                if self.walk_back(n, start, scc, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }

    /// Execution phases: each node lands one phase after the latest of its dependencies, so every
    /// phase only depends on earlier ones. Requires an acyclic graph; nodes keep their order inside
    /// a phase.
    pub fn phases(&self) -> Vec<Vec<usize>> {
        let n = self.graph.node_count();
        let mut level: Vec<Option<usize>> = vec![None; n];
        fn visit(
            g: &DiGraph<usize, ()>,
            i: NodeIndex,
            level: &mut Vec<Option<usize>>,
            depth: usize,
        ) -> usize {
            if let Some(l) = level[i.index()] {
                return l;
            }
            // Acyclic input keeps depth below the node count; the guard only avoids runaway recursion.
            if depth > g.node_count() {
                return 0;
            }
            let l = g
                .neighbors(i)
                .map(|d| visit(g, d, level, depth + 1) + 1)
                .max()
                .unwrap_or(0);
            level[i.index()] = Some(l);
            l
        }
        for i in 0..n {
            visit(&self.graph, NodeIndex::new(i), &mut level, 0);
        }
        let max = level.iter().flatten().max().copied().map_or(0, |m| m + 1);
        let mut phases = vec![Vec::new(); max];
        for (i, l) in level.iter().enumerate() {
            phases[l.expect("every node visited")].push(i);
        }
        phases
    }

    /// The nodes reachable from `roots` (roots included), in index order.
    pub fn closure(&self, roots: &[usize]) -> Vec<usize> {
        let mut keep = vec![false; self.graph.node_count()];
        let mut stack: Vec<NodeIndex> = roots.iter().map(|r| NodeIndex::new(*r)).collect();
        while let Some(i) = stack.pop() {
            if !keep[i.index()] {
                keep[i.index()] = true;
                stack.extend(self.graph.neighbors(i));
            }
        }
        (0..keep.len()).filter(|i| keep[*i]).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cycle_path() {
        // 0 -> 1 -> 2 -> 0, and 3 -> 3
        let d = Deps::new(4, [(0, 1), (1, 2), (2, 0), (3, 3)]);
        assert_eq!(d.cycles(), vec![vec![0, 1, 2, 0], vec![3, 3]]);
    }

    #[test]
    fn acyclic_has_no_cycles_and_phases() {
        // deploy(0) -> build(1), deploy -> setup(2), migrate(3) -> deploy
        let d = Deps::new(4, [(0, 1), (0, 2), (3, 0)]);
        assert!(d.cycles().is_empty());
        assert_eq!(d.phases(), vec![vec![1, 2], vec![0], vec![3]]);
        assert_eq!(d.closure(&[0]), vec![0, 1, 2]);
    }
}

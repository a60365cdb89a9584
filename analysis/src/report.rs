//! Per-module totals: the recorded parameters and operations summed over each module and its
//! submodules, as fvcore's `by_module()` and mmcv's printed model report them.

use crate::counter::{Counter, Op};
use crate::tree::CostTree;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// The totals of one module and, nested, of its submodules (in the order the forward pass
/// first reaches them).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ModuleCost {
    /// The module path (`backbone.stages.0`), `""` for the whole model.
    pub name: String,
    /// Parameters of the module and its submodules.
    pub params: u64,
    /// The trainable ones among them.
    pub trainable: u64,
    /// FLOPs under the report's counter.
    pub flops: u64,
    /// The FLOPs by operator (operators counting zero left out).
    pub flops_by_op: BTreeMap<&'static str, u64>,
    /// fvcore's activation count.
    pub acts: u64,
    /// The submodules.
    pub children: Vec<ModuleCost>,
}

impl ModuleCost {
    /// The module at `path` (`""`: this one), if the tree has it.
    pub fn find(&self, path: &str) -> Option<&ModuleCost> {
        if path == self.name {
            return Some(self);
        }
        self.children.iter().find(|c| path == c.name || path.starts_with(&format!("{}.", c.name)))?.find(path)
    }

    /// Every module of the tree, depth first (this one first).
    pub fn flatten(&self) -> Vec<&ModuleCost> {
        let mut out = vec![self];
        for c in &self.children {
            out.extend(c.flatten());
        }
        out
    }

    /// The tree cut below `depth` levels of submodules (0: this module alone); totals stay.
    pub fn truncated(&self, depth: usize) -> ModuleCost {
        let children =
            if depth == 0 { Vec::new() } else { self.children.iter().map(|c| c.truncated(depth - 1)).collect() };
        ModuleCost { children, ..self.clone() }
    }

    fn add(&mut self, flops: u64, op: Op, acts: u64) {
        self.flops += flops;
        if flops > 0 {
            *self.flops_by_op.entry(op.name()).or_default() += flops;
        }
        self.acts += acts;
    }
}

/// The module paths leading to `path`, outermost first, `""` included.
fn ancestors(path: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    if !path.is_empty() {
        let mut acc = String::new();
        for seg in path.split('.') {
            if !acc.is_empty() {
                acc.push('.');
            }
            acc.push_str(seg);
            out.push(acc.clone());
        }
    }
    out
}

/// The module owning the parameter `name` (`stages.0.0.gamma` belongs to `stages.0.0`).
fn owner(name: &str) -> &str {
    name.rsplit_once('.').map_or("", |(m, _)| m)
}

/// The nodes of a report while it is summed: one per module path, with the order in which the
/// forward pass first reached each.
#[derive(Default)]
struct Nodes {
    order: Vec<String>,
    by_path: HashMap<String, ModuleCost>,
}

impl Nodes {
    /// Creates the nodes of `path` and its ancestors that do not exist yet.
    fn touch(&mut self, path: &str) {
        for a in ancestors(path) {
            if !self.by_path.contains_key(&a) {
                self.order.push(a.clone());
                self.by_path.insert(a.clone(), ModuleCost { name: a, ..Default::default() });
            }
        }
    }

    /// `path` and each of its ancestors.
    fn with_ancestors(&mut self, path: &str, mut f: impl FnMut(&mut ModuleCost)) {
        self.touch(path);
        for a in ancestors(path) {
            f(self.by_path.get_mut(&a).expect("touched"));
        }
    }

    /// The root with every node attached to its parent, children in first-reached order.
    fn into_tree(mut self) -> ModuleCost {
        self.touch("");
        let position: HashMap<String, usize> = self.order.iter().enumerate().map(|(i, p)| (p.clone(), i)).collect();
        let mut deepest_first = self.order.clone();
        deepest_first.sort_by_key(|p| std::cmp::Reverse(if p.is_empty() { 0 } else { p.split('.').count() }));
        for path in deepest_first.into_iter().filter(|p| !p.is_empty()) {
            let node = self.by_path.remove(&path).expect("each path once");
            self.by_path.get_mut(owner(&path)).expect("ancestors exist").children.push(node);
        }
        let mut root = self.by_path.remove("").expect("the root");
        sort_children(&mut root, &position);
        root
    }
}

impl CostTree {
    /// The per-module totals under `counter`; `trainable(name)` says whether a parameter
    /// trains (frozen stages do not).
    pub fn report(&self, counter: Counter, trainable: &dyn Fn(&str) -> bool) -> ModuleCost {
        let mut nodes = Nodes::default();
        for path in &self.visited {
            nodes.touch(path);
        }
        for p in &self.params {
            let t = if trainable(&p.name) { p.numel } else { 0 };
            nodes.with_ancestors(owner(&p.name), |n| {
                n.params += p.numel;
                n.trainable += t;
            });
        }
        for r in &self.ops {
            let flops = r.counts.flops(r.op, counter);
            nodes.with_ancestors(&r.module, |n| n.add(flops, r.op, r.counts.acts));
        }
        nodes.into_tree()
    }
}

/// Orders every node's children by the position their path was first reached.
fn sort_children(node: &mut ModuleCost, position: &HashMap<String, usize>) {
    node.children.sort_by_key(|c| position[&c.name]);
    for c in &mut node.children {
        sort_children(c, position);
    }
}

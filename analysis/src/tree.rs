//! The recorder a model describes its forward pass to: a stack of module names (the current
//! module path) and, under it, the parameters and the operations with their counts.

use crate::counter::{Counts, Op};
use candle_core::{bail, Result};
use std::collections::HashSet;

/// A tensor shape, outermost dimension first (`[N, C, H, W]` or channels-last `[N, H, W, C]`).
pub type Shape = Vec<usize>;

/// Elements of a tensor of shape `dims`.
pub fn numel(dims: &[usize]) -> u64 {
    dims.iter().map(|&d| d as u64).product()
}

/// One operation run inside the module at `module`.
#[derive(Clone, Debug)]
pub(crate) struct OpRecord {
    pub module: String,
    pub op: Op,
    pub counts: Counts,
}

/// One parameter, by its full name.
#[derive(Clone, Debug)]
pub(crate) struct ParamRecord {
    pub name: String,
    pub numel: u64,
}

/// What one forward pass runs, module by module (see the crate docs). Layers are added with
/// the methods of this type ([`CostTree::conv2d`], [`CostTree::linear`], ...), each under the
/// current module path plus its own name; [`CostTree::scope`] enters a submodule.
#[derive(Clone, Debug, Default)]
pub struct CostTree {
    path: Vec<String>,
    pub(crate) ops: Vec<OpRecord>,
    pub(crate) params: Vec<ParamRecord>,
    param_names: HashSet<String>,
    /// Module paths in the order the description first reaches them.
    pub(crate) visited: Vec<String>,
    visited_set: HashSet<String>,
}

impl CostTree {
    /// An empty tree at the root module.
    pub fn new() -> Self {
        Self::default()
    }

    /// The current module path (`backbone.stages.0`), empty at the root.
    pub fn path(&self) -> String {
        self.path.join(".")
    }

    /// The path of the submodule `name` of the current module (the current one for `""`).
    pub(crate) fn child_path(&self, name: &str) -> String {
        match (self.path.is_empty(), name.is_empty()) {
            (_, true) => self.path(),
            (true, false) => name.to_string(),
            (false, false) => format!("{}.{name}", self.path()),
        }
    }

    /// Runs `f` inside the submodule `name` (a name segment, or several joined by dots).
    pub fn scope<T>(&mut self, name: impl std::fmt::Display, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        let name = name.to_string();
        let depth = self.path.len();
        self.path.extend(name.split('.').filter(|s| !s.is_empty()).map(str::to_string));
        let out = f(self);
        self.path.truncate(depth);
        out
    }

    /// Registers the parameter `name` of the current module with shape `dims` (once: a module
    /// run several times, as the RPN head on every pyramid level, has its parameters once).
    pub fn param(&mut self, name: &str, dims: &[usize]) {
        let name = self.child_path(name);
        if self.param_names.insert(name.clone()) {
            self.visit(name.rsplit_once('.').map_or("", |(m, _)| m).to_string());
            self.params.push(ParamRecord { name, numel: numel(dims) });
        }
    }

    /// Notes that the description reached the module `path`.
    fn visit(&mut self, path: String) {
        if self.visited_set.insert(path.clone()) {
            self.visited.push(path);
        }
    }

    /// Records an operation of the module `module` (a submodule name, or `""` for the current
    /// module itself: work a module's `forward` does outside its submodules).
    pub(crate) fn record(&mut self, module: &str, op: Op, counts: Counts) {
        let module = self.child_path(module);
        self.visit(module.clone());
        self.ops.push(OpRecord { module, op, counts });
    }

    /// The names of every registered parameter with its element count, in registration order.
    pub fn parameters(&self) -> Vec<(String, u64)> {
        self.params.iter().map(|p| (p.name.clone(), p.numel)).collect()
    }

    /// Checks that `dims` has `rank` dimensions, naming the layer in the error.
    pub(crate) fn expect_rank(&self, what: &str, dims: &[usize], rank: usize) -> Result<()> {
        if dims.len() != rank {
            bail!("{}: {what} expects a rank-{rank} input, got {dims:?}", self.path_or_root());
        }
        Ok(())
    }

    /// The current path, or `the model` at the root, for error messages.
    pub(crate) fn path_or_root(&self) -> String {
        if self.path.is_empty() {
            "the model".to_string()
        } else {
            self.path()
        }
    }
}

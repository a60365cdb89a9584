//! The named scalars a training step produces: loss terms, which are summed into the total
//! that is differentiated, and metrics (a box head's accuracy), which are only logged.
//!
//! mmdetection tells the two apart by the substring `loss` in the name (`parse_losses`); here
//! each value says which it is when it is pushed, so a metric can never leak into the total.

use candle_core::{Result, Tensor};

/// Whether a named value trains the model or is only reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LossKind {
    /// Summed into the total loss.
    Term,
    /// Logged only (detached by whoever pushes it).
    Metric,
}

/// One named value of a step.
#[derive(Clone, Debug)]
pub struct LossItem {
    /// Its name, e.g. `loss_rpn_cls` or `s1.acc`.
    pub name: String,
    /// A scalar tensor.
    pub value: Tensor,
    /// Term or metric.
    pub kind: LossKind,
}

/// The named loss terms and metrics of one training step, in the order they were produced.
#[derive(Clone, Debug, Default)]
pub struct Losses {
    items: Vec<LossItem>,
}

impl Losses {
    /// No values yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a loss term.
    pub fn push_term(&mut self, name: impl Into<String>, value: Tensor) {
        self.items.push(LossItem { name: name.into(), value, kind: LossKind::Term });
    }

    /// Adds a logged-only metric.
    pub fn push_metric(&mut self, name: impl Into<String>, value: Tensor) {
        self.items.push(LossItem { name: name.into(), value, kind: LossKind::Metric });
    }

    /// Appends another step part's values.
    pub fn extend(&mut self, other: Losses) {
        self.items.extend(other.items);
    }

    /// Appends `other` with `prefix` before each name and its terms scaled by `weight` (a
    /// cascade stage's `s{i}.` and stage loss weight; metrics are not scaled).
    pub fn extend_scaled(&mut self, prefix: &str, other: Losses, weight: f64) -> Result<()> {
        for item in other.items {
            let value = match item.kind {
                LossKind::Term if weight != 1.0 => (item.value * weight)?,
                _ => item.value,
            };
            self.items.push(LossItem { name: format!("{prefix}{}", item.name), value, kind: item.kind });
        }
        Ok(())
    }

    /// Every value, in order.
    pub fn items(&self) -> &[LossItem] {
        &self.items
    }

    /// The value named `name`, if any.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.items.iter().find(|i| i.name == name).map(|i| &i.value)
    }

    /// Whether nothing was pushed.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The sum of every term (each summed to a scalar first), or `None` without terms.
    pub fn total(&self) -> Result<Option<Tensor>> {
        let mut sum: Option<Tensor> = None;
        for item in self.items.iter().filter(|i| i.kind == LossKind::Term) {
            let v = item.value.sum_all()?;
            sum = Some(match sum {
                Some(s) => (s + v)?,
                None => v,
            });
        }
        Ok(sum)
    }
}

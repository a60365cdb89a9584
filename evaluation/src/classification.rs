//! Top-1 / top-5 accuracy for classifiers, accumulated one logit row at a time so that an
//! evaluation over ImageNet never holds all predictions.

/// Indices of the `k` largest values, largest first; ties go to the lower index (as
/// `torch.topk` on CPU does for the first maximum).
pub fn top_k_indices(values: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..values.len()).collect();
    idx.sort_by(|&a, &b| values[b].total_cmp(&values[a]).then(a.cmp(&b)));
    idx.truncate(k);
    idx
}

/// Running top-1 and top-5 accuracy.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TopKAccuracy {
    seen: usize,
    top1: usize,
    top5: usize,
}

impl TopKAccuracy {
    /// An accuracy from its counts: samples seen, top-1 hits, top-5 hits (e.g. summed over the
    /// ranks of a distributed evaluation).
    pub fn from_counts(seen: usize, top1: usize, top5: usize) -> Self {
        Self { seen, top1, top5 }
    }

    /// `[seen, top-1 hits, top-5 hits]`.
    pub fn counts(&self) -> [usize; 3] {
        [self.seen, self.top1, self.top5]
    }

    /// Adds one sample: its logits (or probabilities) and its true label.
    pub fn update(&mut self, scores: &[f32], label: usize) {
        let top = top_k_indices(scores, 5);
        self.seen += 1;
        self.top1 += (top.first() == Some(&label)) as usize;
        self.top5 += top.contains(&label) as usize;
    }

    /// Samples seen so far.
    pub fn seen(&self) -> usize {
        self.seen
    }

    /// Top-1 accuracy in percent (0 before any sample).
    pub fn top1(&self) -> f64 {
        percent(self.top1, self.seen)
    }

    /// Top-5 accuracy in percent (0 before any sample).
    pub fn top5(&self) -> f64 {
        percent(self.top5, self.seen)
    }
}

fn percent(hits: usize, seen: usize) -> f64 {
    if seen == 0 {
        0.0
    } else {
        100.0 * hits as f64 / seen as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_orders_by_value_then_index() {
        assert_eq!(top_k_indices(&[0.1, 0.7, 0.7, -1.0, 0.3], 3), vec![1, 2, 4]);
        assert_eq!(top_k_indices(&[2.0], 5), vec![0]);
        assert!(top_k_indices(&[], 5).is_empty());
    }

    #[test]
    fn accuracy_counts_hits_in_percent() {
        let mut acc = TopKAccuracy::default();
        assert_eq!(acc.top1(), 0.0);
        let scores = [0.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0];
        acc.update(&scores, 1); // top-1 hit
        acc.update(&scores, 5); // top-5 hit only
        acc.update(&scores, 6); // miss
        acc.update(&scores, 0); // miss
        assert_eq!(acc.seen(), 4);
        assert_eq!(acc.top1(), 25.0);
        assert_eq!(acc.top5(), 50.0);
    }
}

//! Gathering a distributed test's detections on every rank (mmdetection's
//! `collect_results_cpu` in `mmdet/apis/test.py`, without the shared temporary folder): each
//! rank encodes its detections as bytes, the group all-gathers them, and the batches are put
//! back in dataset order. The encoding is exact (`f32` bits), so the gathered detections are
//! those of one process.

use anyhow::{bail, Result};
use nextdet_dist::Collective;
use nextdet_evaluation::Detections;
use nextdet_structures::Rle;

/// Every rank's detections on every rank, in dataset order. Rank `r` holds, in order, the
/// detections of the loader batches `r, r + world, ...` of `batch_sizes` (the sizes of all
/// batches, in order): the test loader's sharding.
pub fn gather_detections(
    group: &dyn Collective,
    mine: &[Detections],
    batch_sizes: &[usize],
) -> Result<Vec<Detections>> {
    let world = group.world_size();
    if world == 1 {
        return Ok(mine.to_vec());
    }
    let parts = group.all_gather_bytes(&encode(mine))?;
    let mut per_rank = Vec::with_capacity(world);
    for (r, bytes) in parts.iter().enumerate() {
        let dets = decode(bytes).map_err(|e| anyhow::anyhow!("detections from rank {r}: {e}"))?;
        per_rank.push(dets.into_iter());
    }
    let mut out = Vec::with_capacity(batch_sizes.iter().sum());
    for (k, &n) in batch_sizes.iter().enumerate() {
        for _ in 0..n {
            match per_rank[k % world].next() {
                Some(d) => out.push(d),
                None => bail!("rank {} sent fewer detections than its batches hold", k % world),
            }
        }
    }
    if let Some(r) = per_rank.iter_mut().position(|it| it.next().is_some()) {
        bail!("rank {r} sent more detections than its batches hold");
    }
    Ok(out)
}

/// Little-endian bytes of a list of detections.
fn encode(dets: &[Detections]) -> Vec<u8> {
    let mut b = Vec::new();
    let u32s = |b: &mut Vec<u8>, v: u32| b.extend(v.to_le_bytes());
    u32s(&mut b, dets.len() as u32);
    for d in dets {
        b.extend(d.image_id.to_le_bytes());
        u32s(&mut b, d.boxes.len() as u32);
        for bx in &d.boxes {
            bx.iter().for_each(|v| b.extend(v.to_le_bytes()));
        }
        d.scores.iter().for_each(|v| b.extend(v.to_le_bytes()));
        d.labels.iter().for_each(|&v| u32s(&mut b, v as u32));
        match &d.masks {
            None => b.push(0),
            Some(masks) => {
                b.push(1);
                u32s(&mut b, masks.len() as u32);
                for m in masks {
                    u32s(&mut b, m.height);
                    u32s(&mut b, m.width);
                    u32s(&mut b, m.counts.len() as u32);
                    m.counts.iter().for_each(|&c| u32s(&mut b, c));
                }
            }
        }
    }
    b
}

/// A reader over encoded bytes that fails on truncation instead of panicking.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N]> {
        let Some((head, tail)) = self.0.split_first_chunk::<N>() else { bail!("truncated") };
        self.0 = tail;
        Ok(*head)
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take()?))
    }
    fn f32(&mut self) -> Result<f32> {
        Ok(f32::from_le_bytes(self.take()?))
    }
    /// A count of items of at least `min_bytes` each, checked against what is left.
    fn count(&mut self, min_bytes: usize) -> Result<usize> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_bytes) > self.0.len() {
            bail!("a count of {n} exceeds the bytes left");
        }
        Ok(n)
    }
}

fn decode(bytes: &[u8]) -> Result<Vec<Detections>> {
    let mut r = Reader(bytes);
    let n = r.count(13)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let image_id = u64::from_le_bytes(r.take()?);
        let k = r.count(24)?;
        let boxes = (0..k).map(|_| Ok([r.f32()?, r.f32()?, r.f32()?, r.f32()?])).collect::<Result<Vec<_>>>()?;
        let scores = (0..k).map(|_| r.f32()).collect::<Result<Vec<_>>>()?;
        let labels = (0..k).map(|_| Ok(r.u32()? as usize)).collect::<Result<Vec<_>>>()?;
        let masks = match r.take::<1>()?[0] {
            0 => None,
            1 => {
                let m = r.count(12)?;
                let mut masks = Vec::with_capacity(m);
                for _ in 0..m {
                    let (height, width) = (r.u32()?, r.u32()?);
                    let c = r.count(4)?;
                    let counts = (0..c).map(|_| r.u32()).collect::<Result<Vec<_>>>()?;
                    masks.push(Rle { height, width, counts });
                }
                Some(masks)
            }
            other => bail!("bad mask flag {other}"),
        };
        out.push(Detections { image_id, boxes, scores, labels, masks });
    }
    if !r.0.is_empty() {
        bail!("{} bytes after the last detection", r.0.len());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detections_round_trip_exactly_and_bad_bytes_are_errors() {
        let dets = vec![
            Detections {
                image_id: 7,
                boxes: vec![[0.1, 2.5, f32::MIN_POSITIVE, 1e30], [1.0, 2.0, 3.0, 4.0]],
                scores: vec![0.3333333, 1.0],
                labels: vec![3, 0],
                masks: Some(vec![Rle { height: 2, width: 2, counts: vec![1, 2, 1] }; 2]),
            },
            Detections { image_id: u64::MAX, ..Default::default() },
        ];
        let bytes = encode(&dets);
        assert_eq!(decode(&bytes).unwrap(), dets);
        for cut in [1, 5, bytes.len() - 1] {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut huge = bytes.clone();
        huge[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&huge).is_err());
    }

    #[test]
    fn a_world_of_one_keeps_its_own_detections() {
        let dets = vec![Detections { image_id: 1, ..Default::default() }];
        assert_eq!(gather_detections(&nextdet_dist::Local, &dets, &[1]).unwrap(), dets);
    }
}

//! MaxIoUAssigner, RandomSampler and losses against tests/reference/make_fpn_rpn_fixtures.py
//! (assigner.safetensors: mmdet's assigner re-implemented in torch on crafted cases;
//! losses.safetensors: torch's losses and autograd gradients).

use candle_core::{Device, Tensor, Var};
use nextdet_heads::assigner::{AssignResult, MaxIoUAssigner, MaxIoUAssignerConfig};
use nextdet_heads::losses::{
    cross_entropy, giou_loss, l1_loss, reduce, sigmoid_bce_with_logits, smooth_l1_loss, RegLossConfig,
};
use nextdet_heads::sampler::{RandomSampler, RandomSamplerConfig};
use nextdet_heads::ImageTargets;
use nextdet_ops::Boxes;
use nextdet_testutil::{load_fixture, max_abs_diff};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::collections::HashMap;

fn fixture(name: &str) -> HashMap<String, Tensor> {
    load_fixture(&format!("fpn_rpn/{name}"))
}

fn boxes(t: &Tensor) -> Boxes {
    Boxes::new(t.reshape(((), 4)).unwrap()).unwrap()
}

fn bx(b: &[[f32; 4]]) -> Boxes {
    Boxes::from_slice(&b.iter().flatten().copied().collect::<Vec<_>>(), &Device::Cpu).unwrap()
}

#[test]
fn assigner_matches_mmdet_on_crafted_cases() {
    let fx = fixture("assigner.safetensors");
    for i in 0..8 {
        let p = |k: &str| &fx[&format!("case{i}.{k}")];
        let c: Vec<f32> = p("cfg").to_vec1().unwrap();
        let cfg = MaxIoUAssignerConfig {
            pos_iou_thr: c[0],
            neg_iou_thr: c[1],
            min_pos_iou: c[2],
            match_low_quality: c[3] != 0.0,
            ignore_iof_thr: c[4],
        };
        let labels: Vec<usize> = p("labels").to_vec1::<i64>().unwrap().into_iter().map(|l| l as usize).collect();
        let r = MaxIoUAssigner::new(&cfg)
            .assign(&boxes(p("bboxes")), &boxes(p("gt")), &labels, &boxes(p("ignore")))
            .unwrap();
        assert_eq!(r.num_gts, labels.len(), "case {i}");
        assert_eq!(r.gt_inds, p("gt_inds").to_vec1::<i64>().unwrap(), "case {i} gt_inds");
        let want: Vec<f32> = p("max_overlaps").to_vec1().unwrap();
        for (a, b) in r.max_overlaps.iter().zip(&want) {
            assert!((a - b).abs() <= 1e-6, "case {i}: max_overlaps {:?} vs {want:?}", r.max_overlaps);
        }
        let got: Vec<i64> = r.labels.iter().map(|l| l.map_or(-1, |l| l as i64)).collect();
        assert_eq!(got, p("assigned_labels").to_vec1::<i64>().unwrap(), "case {i} labels");
    }
}

#[test]
fn assigner_without_labels_leaves_them_empty() {
    let cfg = MaxIoUAssignerConfig {
        pos_iou_thr: 0.5,
        neg_iou_thr: 0.5,
        min_pos_iou: 0.5,
        match_low_quality: true,
        ignore_iof_thr: -1.0,
    };
    let r = MaxIoUAssigner::new(&cfg)
        .assign(&bx(&[[0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 60.0, 60.0]]), &bx(&[[0.0, 0.0, 10.0, 12.0]]), &[], &bx(&[]))
        .unwrap();
    assert_eq!(r.gt_inds, vec![1, 0]);
    assert_eq!(r.labels, vec![None, None]);
}

fn assign_result(gt_inds: Vec<i64>, num_gts: usize) -> AssignResult {
    let n = gt_inds.len();
    AssignResult { num_gts, gt_inds, max_overlaps: vec![0.5; n], labels: vec![None; n] }
}

#[test]
fn sampler_sizes_follow_mmdet() {
    // 30 positives, 500 negatives, 20 ignored.
    let mut gt_inds = vec![0i64; 550];
    for (k, g) in gt_inds.iter_mut().enumerate().take(30) {
        *g = (k % 3) as i64 + 1;
    }
    for g in gt_inds.iter_mut().skip(530) {
        *g = -1;
    }
    let assign = assign_result(gt_inds.clone(), 3);
    let mut rng = StdRng::seed_from_u64(0);
    let cfg = RandomSamplerConfig { num: 256, pos_fraction: 0.25, neg_pos_ub: -1, add_gt_as_proposals: false };
    let s = RandomSampler::new(&cfg).sample(&assign, &mut rng);
    assert_eq!(s.pos_inds.len(), 30); // fewer than 64: all of them
    assert_eq!(s.neg_inds.len(), 226);
    assert!(s.neg_inds.windows(2).all(|w| w[0] < w[1]) && s.neg_inds.iter().all(|&i| gt_inds[i] == 0));
    assert_eq!(s.pos_gt_inds, (0..30).map(|k| k % 3).collect::<Vec<_>>());
    let cfg = RandomSamplerConfig { num: 40, pos_fraction: 0.5, neg_pos_ub: -1, add_gt_as_proposals: false };
    let s = RandomSampler::new(&cfg).sample(&assign, &mut rng);
    assert_eq!((s.pos_inds.len(), s.neg_inds.len()), (20, 20));
    assert!(s.pos_inds.windows(2).all(|w| w[0] < w[1]) && s.pos_inds.iter().all(|&i| i < 30));
    for (&i, &g) in s.pos_inds.iter().zip(&s.pos_gt_inds) {
        assert_eq!(g, i % 3);
    }
    let cfg = RandomSamplerConfig { num: 256, pos_fraction: 0.5, neg_pos_ub: 3, add_gt_as_proposals: false };
    let s = RandomSampler::new(&cfg).sample(&assign, &mut rng);
    assert_eq!((s.pos_inds.len(), s.neg_inds.len()), (30, 90));
    // Different seeds draw different subsets.
    let cfg = RandomSamplerConfig { num: 40, pos_fraction: 0.5, neg_pos_ub: -1, add_gt_as_proposals: false };
    let a = RandomSampler::new(&cfg).sample(&assign, &mut StdRng::seed_from_u64(1));
    let b = RandomSampler::new(&cfg).sample(&assign, &mut StdRng::seed_from_u64(2));
    assert_ne!(a.neg_inds, b.neg_inds);
}

#[test]
fn sampler_prepends_gts_as_mmdet_add_gt() {
    let gt = [[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]];
    let proposals = [[0.0, 0.0, 9.0, 10.0], [40.0, 40.0, 50.0, 50.0], [19.0, 20.0, 30.0, 30.0]];
    let cfg = MaxIoUAssignerConfig {
        pos_iou_thr: 0.5,
        neg_iou_thr: 0.5,
        min_pos_iou: 0.5,
        match_low_quality: true,
        ignore_iof_thr: -1.0,
    };
    let assigner = MaxIoUAssigner::new(&cfg);
    let mut assign = assigner.assign(&bx(&proposals), &bx(&gt), &[7, 9], &bx(&[])).unwrap();
    assert_eq!(assign.gt_inds, vec![1, 0, 2]);
    let scfg = RandomSamplerConfig { num: 512, pos_fraction: 0.25, neg_pos_ub: -1, add_gt_as_proposals: true };
    let sampler = RandomSampler::new(&scfg);
    let s = sampler.sample_with_gt(&mut assign, &[7, 9], &mut StdRng::seed_from_u64(0));
    assert_eq!(s.pos_inds, vec![0, 1, 2, 4]);
    assert_eq!(s.pos_gt_inds, vec![0, 1, 0, 1]);
    assert_eq!(s.neg_inds, vec![3]);
    assert_eq!(assign.labels, vec![Some(7), Some(9), Some(7), None, Some(9)]);
    // The sampled RoIs: the positives (gt 0, gt 1, proposals 0 and 2), then the negative.
    let target = ImageTargets::new(gt.to_vec(), vec![7, 9], (64, 64));
    let rois =
        nextdet_heads::roi::sample_rois(&assigner, &sampler, &bx(&proposals), &target, &mut StdRng::seed_from_u64(0))
            .unwrap();
    assert_eq!(
        (rois.num_pos, rois.pos_gt_inds.clone(), rois.pos_is_gt.clone()),
        (4, vec![0, 1, 0, 1], vec![true, true, false, false])
    );
    let rows = rois.boxes.tensor().to_vec2::<f32>().unwrap();
    let want = [gt[0], gt[1], proposals[0], proposals[2], proposals[1]];
    assert_eq!(rows, want.iter().map(|b| b.to_vec()).collect::<Vec<_>>());
}

fn grad_of(x: &Tensor, f: impl Fn(&Tensor) -> Tensor, gy: &Tensor) -> (Tensor, Tensor) {
    let v = Var::from_tensor(x).unwrap();
    let y = f(v.as_tensor());
    let g = (&y * gy).unwrap().sum_all().unwrap().backward().unwrap();
    (y.detach(), g.get(v.as_tensor()).unwrap().clone())
}

#[test]
fn bce_is_stable_and_matches_torch() {
    let fx = fixture("losses.safetensors");
    let (t, w) = (&fx["bce_targets"], &fx["bce_weights"]);
    let (y, g) = grad_of(&fx["bce_logits"], |x| sigmoid_bce_with_logits(x, t, Some(w)).unwrap(), &fx["gy_bce"]);
    // Logits of +-1e4 give losses of ~1e4: compare relatively.
    let rel = ((&y - &fx["bce"]).unwrap().abs().unwrap() / (fx["bce"].abs().unwrap() + 1.0).unwrap()).unwrap();
    let d = rel.max(0).unwrap().to_scalar::<f32>().unwrap();
    assert!(d < 1e-6, "bce rel diff {d}");
    let d = max_abs_diff(&g, &fx["bce_grad"]);
    assert!(d < 1e-6, "bce grad diff {d}");
}

#[test]
fn cross_entropy_matches_torch() {
    let fx = fixture("losses.safetensors");
    let labels: Vec<usize> = fx["ce_labels"].to_vec1::<i64>().unwrap().into_iter().map(|l| l as usize).collect();
    let (y, g) = grad_of(&fx["ce_logits"], |x| cross_entropy(x, &labels).unwrap(), &fx["gy_ce"]);
    assert!(max_abs_diff(&y, &fx["ce"]) < 1e-4);
    assert!(max_abs_diff(&g, &fx["ce_grad"]) < 1e-5);
    assert!(cross_entropy(&fx["ce_logits"], &[5; 16]).is_err());
}

#[test]
fn regression_losses_match_torch() {
    let fx = fixture("losses.safetensors");
    let t = &fx["sl1_target"];
    let (y, g) = grad_of(&fx["sl1_pred"], |x| smooth_l1_loss(x, t, 1.0 / 9.0).unwrap(), &fx["gy_reg"]);
    assert!(max_abs_diff(&y, &fx["sl1"]) < 1e-6);
    assert!(max_abs_diff(&g, &fx["sl1_grad"]) < 1e-5);
    let (y, g) = grad_of(&fx["sl1_pred"], |x| l1_loss(x, t).unwrap(), &fx["gy_reg"]);
    assert!(max_abs_diff(&y, &fx["l1"]) < 1e-6);
    assert!(max_abs_diff(&g, &fx["l1_grad"]) < 1e-6);
    let t = &fx["giou_target"];
    let (y, g) = grad_of(&fx["giou_pred"], |x| giou_loss(x, t, 1e-6).unwrap(), &fx["gy_giou"]);
    assert!(max_abs_diff(&y, &fx["giou_loss"]) < 1e-5);
    let d = max_abs_diff(&g, &fx["giou_grad"]);
    assert!(d < 1e-4, "giou grad {d}");
}

#[test]
fn reduction_and_configs_follow_mmdet() {
    let dev = Device::Cpu;
    let loss = Tensor::new(&[1f32, 2.0, 3.0, 4.0], &dev).unwrap();
    let w = Tensor::new(&[1f32, 0.0, 1.0, 0.5], &dev).unwrap();
    let v = |t: Tensor| t.to_scalar::<f32>().unwrap();
    assert_eq!(v(reduce(&loss, Some(&w), Some(2.0)).unwrap()), 3.0);
    assert_eq!(v(reduce(&loss, None, None).unwrap()), 2.5);
    let pred = Tensor::new(&[[0f32, 0.0, 10.0, 10.0], [0.0, 0.0, 4.0, 4.0]], &dev).unwrap();
    let target = Tensor::new(&[[0f32, 0.0, 10.0, 5.0], [0.0, 0.0, 4.0, 4.0]], &dev).unwrap();
    let ones = Tensor::ones((2, 4), candle_core::DType::F32, &dev).unwrap();
    let l1 = RegLossConfig::L1Loss { loss_weight: 2.0 };
    assert_eq!(v(l1.compute(&pred, &target, Some(&ones), Some(4.0)).unwrap()), 2.5);
    let giou = RegLossConfig::GIoULoss { loss_weight: 10.0 };
    // giou of the first pair is 0.5; weights [1, 1, 1, 1] and [0, 0, 0, 0] mean to 1 and 0.
    let w = Tensor::new(&[[1f32; 4], [0.0; 4]], &dev).unwrap();
    assert!((v(giou.compute(&pred, &target, Some(&w), Some(1.0)).unwrap()) - 5.0).abs() < 1e-6);
    let zero = ones.zeros_like().unwrap();
    assert_eq!(v(giou.compute(&pred, &target, Some(&zero), Some(1.0)).unwrap()), 0.0);
    let sl1 = RegLossConfig::SmoothL1Loss { beta: 1.0, loss_weight: 1.0 };
    assert_eq!(v(sl1.compute(&pred, &target, None, Some(1.0)).unwrap()), 4.5);
}

#[test]
fn zero_loss_keeps_zero_gradients() {
    let v = Var::from_tensor(&Tensor::new(&[1f32, -2.0, 3.0], &Device::Cpu).unwrap()).unwrap();
    let l = nextdet_heads::losses::zero_loss(&(v.as_tensor() * 2.0).unwrap()).unwrap();
    assert_eq!(l.to_scalar::<f32>().unwrap(), 0.0);
    let g = l.backward().unwrap();
    assert_eq!(g.get(v.as_tensor()).expect("a gradient").to_vec1::<f32>().unwrap(), vec![0.0; 3]);
    // An empty prediction gives 0 with a gradient too (mmdet's `pred.sum() * 0`).
    let e = Var::from_tensor(&Tensor::zeros((0, 4), candle_core::DType::F32, &Device::Cpu).unwrap()).unwrap();
    let cfg = RegLossConfig::L1Loss { loss_weight: 1.0 };
    let l = cfg.compute(e.as_tensor(), e.as_tensor(), None, Some(1.0)).unwrap();
    assert_eq!(l.to_scalar::<f32>().unwrap(), 0.0);
}

//! mmdet `AnchorGenerator` anchors, valid flags and inside flags against the formulas written
//! out in torch by `tests/reference/make_box_fixtures.py`.

use candle_core::{DType, Device, Tensor};
use nextdet_ops::{anchor_inside_flags, AnchorGenerator};
use nextdet_testutil::load_fixture;
use std::collections::HashMap;

fn fixture(name: &str) -> HashMap<String, Tensor> {
    load_fixture(&format!("ops/boxes/{name}"))
}

fn f32s(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

fn u8s(t: &Tensor) -> Vec<u8> {
    t.to_vec1().unwrap()
}

const SIZES: [(usize, usize); 5] = [(13, 19), (7, 10), (4, 5), (2, 3), (1, 2)];

#[test]
fn anchors_match_mmdet_exactly() {
    let f = fixture("anchors.safetensors");
    let gen = AnchorGenerator::new(&[4, 8, 16, 32, 64], &[0.5, 1.0, 2.0], &[8.0]).unwrap();
    assert_eq!(gen.num_base_anchors(), 3);
    let anchors = gen.grid_anchors(&SIZES, &Device::Cpu).unwrap();
    for (l, a) in anchors.iter().enumerate() {
        assert_eq!(a.dims(), f[&format!("anchors_{l}")].dims(), "level {l}");
        assert_eq!(f32s(a), f32s(&f[&format!("anchors_{l}")]), "level {l}");
    }
    let oct = AnchorGenerator::from_octaves(&[8, 16], &[0.5, 1.0, 2.0], 4.0, 3).unwrap();
    for (l, a) in oct.grid_anchors(&[(3, 4), (2, 2)], &Device::Cpu).unwrap().iter().enumerate() {
        assert_eq!(f32s(a), f32s(&f[&format!("octave_{l}")]), "octave level {l}");
    }
}

#[test]
fn rounded_base_anchors_match_torchvision() {
    let f = fixture("anchors.safetensors");
    let mmdet = AnchorGenerator::new(&[4, 8, 16, 32, 64], &[0.5, 1.0, 2.0], &[8.0]).unwrap();
    let tv = mmdet.clone().with_rounded_base_anchors();
    let (ours, unrounded) =
        (tv.grid_anchors(&SIZES, &Device::Cpu).unwrap(), mmdet.grid_anchors(&SIZES, &Device::Cpu).unwrap());
    for (l, (a, m)) in ours.iter().zip(&unrounded).enumerate() {
        assert_eq!(f32s(a), f32s(&f[&format!("tv_anchors_{l}")]), "level {l}");
        assert_ne!(f32s(a), f32s(m), "level {l}: rounding must change the 0.5/2 ratio anchors");
    }
}

#[test]
fn valid_and_inside_flags_match_mmdet() {
    let f = fixture("anchors.safetensors");
    let gen = AnchorGenerator::new(&[4, 8, 16, 32, 64], &[0.5, 1.0, 2.0], &[8.0]).unwrap();
    let anchors = gen.grid_anchors(&SIZES, &Device::Cpu).unwrap();
    let valid = gen.valid_flags(&SIZES, (50, 70), &Device::Cpu).unwrap();
    for l in 0..5 {
        assert_eq!(u8s(&valid[l]), u8s(&f[&format!("valid_{l}")]), "valid level {l}");
        for (border, name) in [(-1, "m1"), (0, "0"), (8, "8")] {
            let inside = anchor_inside_flags(&anchors[l], &valid[l], (45, 66), border).unwrap();
            assert_eq!(u8s(&inside), u8s(&f[&format!("inside_{name}_{l}")]), "inside {name} level {l}");
        }
    }
}

#[test]
fn bad_inputs_are_errors_and_empty_maps_work() {
    let dev = Device::Cpu;
    assert!(AnchorGenerator::new(&[], &[1.0], &[8.0]).is_err());
    assert!(AnchorGenerator::new(&[0], &[1.0], &[8.0]).is_err());
    assert!(AnchorGenerator::new(&[4], &[-1.0], &[8.0]).is_err());
    assert!(AnchorGenerator::new(&[4], &[1.0], &[f32::NAN]).is_err());
    let gen = AnchorGenerator::new(&[4, 8], &[1.0], &[8.0]).unwrap();
    assert!(gen.grid_anchors(&[(2, 2)], &dev).is_err());
    assert!(gen.base_anchors(2).is_err());
    let a = gen.level_anchors(0, (0, 5), &dev).unwrap();
    assert_eq!(a.dims(), [0, 4]);
    let v = gen.valid_flags(&[(0, 5), (1, 1)], (10, 10), &dev).unwrap();
    assert_eq!(v[0].dims(), [0]);
    assert_eq!(anchor_inside_flags(&a, &v[0], (10, 10), 0).unwrap().dims(), [0]);
    let wrong = Tensor::zeros(3, DType::U8, &dev).unwrap();
    assert!(anchor_inside_flags(&a, &wrong, (10, 10), 0).is_err());
    // Base anchors: stride 4, ratio 1, scale 8 is a 32x32 box centered on the origin.
    assert_eq!(gen.base_anchors(0).unwrap(), &[[-16.0, -16.0, 16.0, 16.0]]);
}

//! Checkpoint reading: official, timm (pth and safetensors), `module.`-prefixed and mmdetection
//! layouts of every ConvNeXt variant load with nothing missing or left over; bad files give one
//! clear error. Fixtures from `tests/reference/make_backbone_fixtures.py`.

mod common;

use candle_core::Device;
use common::{assert_close, fixture, fixture_path};
use nextdet_backbones::config::{BackboneConfig, ConvNeXtArch, ConvNeXtConfig, IsotropicArch, IsotropicConfig};
use nextdet_backbones::weights::{load_checkpoint, WeightsError};
use nextdet_backbones::{build_backbone, build_classifier, Classifier};
use nextdet_ops::ParamStore;

/// The variant's real depths with the fixtures' reduced widths.
fn reduced(arch: ConvNeXtArch) -> BackboneConfig {
    let (depths, _) = arch.shape();
    BackboneConfig::ConvNeXt(ConvNeXtConfig {
        arch: Some(arch),
        depths: Some(depths.to_vec()),
        dims: Some(vec![4, 8, 8, 16]),
        in_chans: 3,
        drop_path_rate: 0.0,
        layer_scale_init_value: 1.0,
        out_indices: vec![0, 1, 2, 3],
    })
}

fn classifier(cfg: &BackboneConfig) -> (ParamStore, Box<dyn Classifier>) {
    let store = ParamStore::new(&Device::Cpu, 0);
    let net = build_classifier(cfg, 10, &store.root(), 0).unwrap();
    (store, net)
}

#[test]
fn every_convnext_variant_loads_official_and_timm_layouts_exactly() {
    use ConvNeXtArch::*;
    for (arch, name) in [(Tiny, "tiny"), (Small, "small"), (Base, "base"), (Large, "large"), (Xlarge, "xlarge")] {
        for layout in ["official", "timm"] {
            let (store, _) = classifier(&reduced(arch));
            let path = fixture_path(&format!("checkpoints/convnext_{name}_{layout}.pth"));
            let outcome = load_checkpoint(&store, &path, true).unwrap_or_else(|e| panic!("{e}"));
            assert!(outcome.report.is_exact(), "{name} {layout}: {:?}", outcome.report);
        }
    }
}

#[test]
fn every_isotropic_variant_loads_exactly() {
    for (arch, name, layer_scale) in [
        (IsotropicArch::Small, "small", 0.0),
        (IsotropicArch::Base, "base", 0.0),
        (IsotropicArch::Large, "large", 1e-6),
    ] {
        let depth = if name == "large" { 36 } else { 18 };
        let cfg = BackboneConfig::ConvNeXtIsotropic(IsotropicConfig {
            arch: Some(arch),
            depth: Some(depth),
            dim: Some(8),
            in_chans: 3,
            drop_path_rate: 0.0,
            layer_scale_init_value: layer_scale,
        });
        let (store, _) = classifier(&cfg);
        let path = fixture_path(&format!("checkpoints/convnext_isotropic_{name}_official.pth"));
        let outcome = load_checkpoint(&store, &path, true).unwrap_or_else(|e| panic!("{e}"));
        assert!(outcome.report.is_exact(), "iso {name}: {:?}", outcome.report);
    }
}

#[test]
fn all_tiny_layouts_give_the_reference_logits() {
    let expected = fixture("checkpoints/convnext_tiny_expected.safetensors");
    for file in ["official.pth", "timm.pth", "timm.safetensors", "module_prefix.pth"] {
        let (store, net) = classifier(&reduced(ConvNeXtArch::Tiny));
        load_checkpoint(&store, &fixture_path(&format!("checkpoints/convnext_tiny_{file}")), true)
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        let logits = net.forward(&expected["input"], false).unwrap();
        assert_close(file, &logits, &expected["logits"], 1e-4);
    }
}

#[test]
fn mmdet_checkpoint_fills_a_detection_backbone() {
    let store = ParamStore::new(&Device::Cpu, 0);
    build_backbone(&reduced(ConvNeXtArch::Tiny), &store.root(), 0).unwrap();
    let outcome = load_checkpoint(&store, &fixture_path("checkpoints/convnext_tiny_mmdet.pth"), true).unwrap();
    assert!(outcome.report.is_exact(), "{:?}", outcome.report);
    assert!(outcome.notes.iter().any(|n| n.contains("ignored 3 other tensors")), "{:?}", outcome.notes);
}

#[test]
fn a_head_with_another_class_count_is_dropped_with_a_warning() {
    let store = ParamStore::new(&Device::Cpu, 0);
    build_classifier(&reduced(ConvNeXtArch::Tiny), 3, &store.root(), 0).unwrap();
    let outcome = load_checkpoint(&store, &fixture_path("checkpoints/convnext_tiny_official.pth"), false).unwrap();
    assert!(outcome.notes.iter().any(|n| n.starts_with("warning: dropped the checkpoint's `head`")));
    assert_eq!(outcome.report.missing, vec!["head.weight".to_string(), "head.bias".to_string()]);
    assert!(outcome.report.unexpected.is_empty() && outcome.report.mismatched.is_empty());
}

#[test]
fn bad_files_give_one_clear_error_naming_the_file() {
    let (store, _) = classifier(&reduced(ConvNeXtArch::Tiny));
    let missing = load_checkpoint(&store, &fixture_path("checkpoints/nope.pth"), true).unwrap_err();
    assert!(matches!(missing, WeightsError::NotFound(_)));
    assert!(missing.to_string().contains("nope.pth"), "{missing}");

    let text = load_checkpoint(&store, &fixture_path("checkpoints/not_a_checkpoint.pth"), true).unwrap_err();
    assert!(matches!(text, WeightsError::UnknownFormat(_)), "{text}");
    assert!(text.to_string().contains("not_a_checkpoint.pth"));

    let truncated =
        load_checkpoint(&store, &fixture_path("checkpoints/convnext_tiny_truncated.pth"), true).unwrap_err();
    assert!(matches!(truncated, WeightsError::Unreadable { .. }), "{truncated}");
    assert!(truncated.to_string().contains("convnext_tiny_truncated.pth"));
}

#[test]
fn a_checkpoint_of_another_model_is_rejected_by_name() {
    let (store, _) = classifier(&reduced(ConvNeXtArch::Small));
    let err = load_checkpoint(&store, &fixture_path("checkpoints/convnext_tiny_official.pth"), true).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, WeightsError::Mismatch { .. }), "{msg}");
    assert!(msg.contains("convnext_tiny_official.pth") && msg.contains("missing (stages.2.9."), "{msg}");
}

#[test]
fn an_mmdetection_checkpoint_names_its_classes() {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/checkpoints");
    let names = nextdet_backbones::weights::checkpoint_class_names(&dir.join("mmdet_meta_classes.pth"));
    assert_eq!(names, Some(vec!["person".to_string(), "traffic light".into(), "teddy bear".into()]));
    // a checkpoint whose meta holds no CLASSES, and one that is not a .pth
    assert_eq!(nextdet_backbones::weights::checkpoint_class_names(&dir.join("dtypes_views.pth")), None);
    assert_eq!(nextdet_backbones::weights::checkpoint_class_names(&dir.join("convnext_tiny_timm.safetensors")), None);
}

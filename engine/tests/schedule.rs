//! Learning-rate schedules against mmcv's StepLrUpdaterHook with linear/constant/exp warmup and
//! ConvNeXt's utils.cosine_scheduler, evaluated by tests/reference/make_engine_fixtures.py at sample
//! (epoch, iteration) points.

use nextdet_engine::schedule::{LrSchedule, LrScheduleConfig};
use serde::Deserialize;

#[derive(Deserialize)]
struct Case {
    config: serde_json::Value,
    base_lr: f64,
    max_epochs: usize,
    iters_per_epoch: usize,
    points: Vec<(usize, usize)>,
    lr: Vec<f64>,
}

#[test]
fn schedules_match_mmcv_and_cnx() {
    let path = format!("{}/../tests/fixtures/engine/schedule.json", env!("CARGO_MANIFEST_DIR"));
    let cases: Vec<Case> = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(cases.len(), 9);
    for case in cases {
        let cfg: LrScheduleConfig = serde_json::from_value(case.config.clone()).unwrap();
        let s = LrSchedule::new(cfg, case.base_lr, case.max_epochs);
        for ((e, i), want) in case.points.iter().zip(&case.lr) {
            let got = s.lr_at(*e, *i, case.iters_per_epoch);
            assert!(
                (got - want).abs() <= 1e-12 * want.abs().max(1e-6),
                "{} at ({e}, {i}): {got} vs {want}",
                case.config
            );
        }
    }
}

#[test]
fn yaml_config_and_typos() {
    let cfg: LrScheduleConfig =
        serde_yaml::from_str("policy: step\nstep: [27, 33]\nwarmup: linear\nwarmup_iters: 500\nwarmup_ratio: 0.001\n")
            .unwrap();
    let s = LrSchedule::new(cfg, 1e-4, 36);
    assert!((s.lr_at(0, 0, 100) - 1e-7).abs() < 1e-15);
    assert_eq!(s.lr_at(30, 0, 100), 1e-4 * 0.1f64.powf(1.0));
    assert!(serde_yaml::from_str::<LrScheduleConfig>("policy: step\nsteps: [1]\n").is_err());
    assert!(serde_yaml::from_str::<LrScheduleConfig>("policy: poly\n").is_err());
}

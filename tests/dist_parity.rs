//! Data-parallel parity below the command line, on two MPI ranks against one process:
//!
//! - the gradient of Mask R-CNN (the tiny test model; no batch norm in its heads) all-reduced
//!   over two ranks of one image each is the mean of the two one-image gradients of one process
//!   (mmdetection normalizes each loss within a rank's batch, so this, not "one process with
//!   twice the batch", is what data parallelism must give);
//! - `SyncBN` on two ranks (of uneven batches) gives the output, running statistics and
//!   gradients of batch norm over the concatenated batch in one process.
//!
//! Each parent test runs the `parity_child` test twice: as one process (the reference) and
//! under `mpirun -np 2`; both write what they computed, and the parent compares. Both runs use
//! one thread, so that the per-image work is the same computation. Skipped without
//! `--features mpi`.

mod common;

use candle_core::{DType, Device, Tensor, Var};
use common::mpi::{mpi_enabled, mpirun, run_with_far_deadline, FAR};
use nextdet_heads::batch_norm::BatchNorm;
use nextdet_heads::ImageTargets;
use nextdet_models::Model;
use nextdet_ops::ParamStore;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const JOB: &str = "NEXTDET_PARITY_JOB";
const OUT: &str = "NEXTDET_PARITY_OUT";

/// Runs `parity_child` for `job` as one process into `dir/single` and on two ranks into
/// `dir/dist`.
fn run_child(job: &str, dir: &Path) -> (PathBuf, PathBuf) {
    let exe = std::env::current_exe().unwrap();
    let args = ["parity_child", "--exact", "--ignored", "--nocapture", "--test-threads", "1"];
    let (single, dist) = (dir.join("single"), dir.join("dist"));
    for (out, ranks) in [(&single, 1), (&dist, 2)] {
        std::fs::create_dir_all(out).unwrap();
        let env = [(JOB, job), (OUT, out.to_str().unwrap()), ("RAYON_NUM_THREADS", "1")];
        let cmd = if ranks == 1 {
            let mut c = std::process::Command::new(&exe);
            c.args(args).envs(env);
            c
        } else {
            mpirun(ranks, &env, &exe, &args)
        };
        let output = run_with_far_deadline(cmd, FAR);
        assert!(
            output.status.success(),
            "{job} on {ranks} rank(s): {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    (single, dist)
}

fn load(path: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

/// The largest difference relative to the largest magnitude of `want` (at least 1): sums over
/// many values differ in their last bits when summed in another order.
fn max_rel_diff(want: &Tensor, got: &Tensor) -> f32 {
    let scale = want.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap().max(1.0);
    max_abs_diff(want, got) / scale
}

#[test]
fn allreduced_mask_rcnn_gradient_is_the_mean_of_the_one_image_gradients() {
    if !mpi_enabled("allreduced_mask_rcnn_gradient_is_the_mean_of_the_one_image_gradients") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (single, dist) = run_child("grad", tmp.path());
    let want = load(&single.join("grads.safetensors"));
    let got = load(&dist.join("grads.safetensors"));
    let mut names: Vec<&String> = want.keys().collect();
    names.sort();
    assert_eq!(names, {
        let mut g: Vec<&String> = got.keys().collect();
        g.sort();
        g
    });
    assert!(names.len() > 20, "{names:?}");
    let mut worst = 0f32;
    for name in names {
        let d = max_abs_diff(&want[name], &got[name]);
        assert!(d <= 1e-6, "{name}: all-reduced gradient differs from the one-process mean by {d}");
        worst = worst.max(d);
    }
    eprintln!("all-reduced gradient against the one-process mean: max |difference| {worst}");
}

#[test]
fn sync_bn_on_two_ranks_is_batch_norm_over_the_concatenated_batch() {
    if !mpi_enabled("sync_bn_on_two_ranks_is_batch_norm_over_the_concatenated_batch") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (single, dist) = run_child("syncbn", tmp.path());
    let want = load(&single.join("rank0.safetensors"));
    let ranks = [load(&dist.join("rank0.safetensors")), load(&dist.join("rank1.safetensors"))];
    for layer in ["bn4d", "bn2d"] {
        // outputs and input gradients: rank r's rows of the concatenated batch
        for key in ["y", "dx"] {
            let k = format!("{layer}.{key}");
            let got = Tensor::cat(&[&ranks[0][&k], &ranks[1][&k]], 0).unwrap();
            let d = max_rel_diff(&want[&k], &got);
            assert!(d <= 2e-6, "{k}: relative difference {d}");
        }
        // running statistics: the same on both ranks, those of the whole batch
        for key in ["running_mean", "running_var", "num_batches_tracked"] {
            let k = format!("{layer}.{key}");
            for (r, rank) in ranks.iter().enumerate() {
                let d = max_rel_diff(&want[&k], &rank[&k]);
                assert!(d <= 1e-6, "{k} on rank {r}: relative difference {d}");
            }
        }
        // parameter gradients: each rank's own part, summed over the ranks (what the
        // data-parallel average of the per-rank losses then scales)
        for key in ["dweight", "dbias"] {
            let k = format!("{layer}.{key}");
            let d = max_rel_diff(&want[&k], &ranks[0][&k]);
            assert!(d <= 2e-6, "{k}: relative difference {d}");
        }
    }
}

#[test]
#[ignore = "run by the other tests of this file, alone and under mpirun"]
fn parity_child() {
    let out = PathBuf::from(std::env::var(OUT).expect("NEXTDET_PARITY_OUT"));
    let guard = nextdet_dist::init(None).expect("start the process group");
    match std::env::var(JOB).as_deref() {
        Ok("grad") => grad_child(&out),
        Ok("syncbn") => syncbn_child(&out),
        other => panic!("{JOB}={other:?}"),
    }
    drop(guard);
}

/// One image of the gradient test: a random picture and two to four random boxes with masks.
fn image(i: u64) -> (Tensor, ImageTargets) {
    let mut rng = StdRng::seed_from_u64(40 + i);
    let (h, w) = (64, 96);
    let data: Vec<f32> = (0..3 * h * w).map(|_| rng.gen_range(-2.0..2.0)).collect();
    let n = rng.gen_range(2..5);
    let mut boxes = Vec::new();
    let mut masks = vec![0u8; n * h * w];
    for mask in masks.chunks_exact_mut(h * w) {
        let (x0, y0) = (rng.gen_range(0.0..50.0f32), rng.gen_range(0.0..30.0f32));
        let b = [x0, y0, x0 + rng.gen_range(12.0..40.0f32), y0 + rng.gen_range(12.0..30.0f32)];
        for y in b[1] as usize..b[3] as usize {
            mask[y * w + b[0] as usize..y * w + b[2] as usize].fill(1);
        }
        boxes.push(b);
    }
    let labels = (0..n).map(|_| rng.gen_range(0..3)).collect();
    let mut t = ImageTargets::new(boxes, labels, (h, w));
    t.masks = Some(Tensor::from_vec(masks, (n, h, w), &Device::Cpu).unwrap());
    (Tensor::from_vec(data, (1, 3, h, w), &Device::Cpu).unwrap(), t)
}

/// Image `i`'s gradient of every trainable parameter that gets one.
fn one_image_grads(det: &nextdet_models::TwoStageDetector, i: u64) -> candle_core::backprop::GradStore {
    let (img, target) = image(i);
    let mut rngs = [StdRng::seed_from_u64(100 + i)];
    let losses = det.forward_train(&img, &[target], &mut rngs).unwrap();
    losses.total().unwrap().unwrap().backward().unwrap()
}

fn grad_child(out: &Path) {
    let group = nextdet_dist::world();
    let cfg_path = common::root().join("tests/configs/detector_tiny_mask_rcnn.yaml");
    let cfg = nextdet_apis::load_config(&cfg_path, &[]).unwrap();
    let Model::Detector(det) = nextdet_apis::weights::build(&cfg, 5).unwrap() else { panic!("a detector") };
    let params = det.params();
    let mut named = HashMap::new();
    if group.world_size() == 1 {
        let (g0, g1) = (one_image_grads(&det, 0), one_image_grads(&det, 1));
        for (name, var) in params.trainable() {
            let mean = match (g0.get(var.as_tensor()), g1.get(var.as_tensor())) {
                (Some(a), Some(b)) => ((a + b).unwrap() * 0.5).unwrap(),
                (Some(a), None) | (None, Some(a)) => (a * 0.5).unwrap(),
                (None, None) => continue,
            };
            named.insert(name, mean);
        }
    } else {
        let mut grads = one_image_grads(&det, group.rank() as u64);
        // small buckets, so that parameters share and split buckets
        nextdet_engine::trainer::hooks::all_reduce_grads(&*group, &mut grads, params, 64 << 10).unwrap();
        for (name, var) in params.trainable() {
            if let Some(g) = grads.get(var.as_tensor()) {
                named.insert(name, g.clone());
            }
        }
    }
    if group.is_main() {
        candle_core::safetensors::save(&named, out.join("grads.safetensors")).unwrap();
    }
}

/// A random `[n, c, ...]` input of rank `r` (the one-process run concatenates them).
fn bn_input(r: u64, dims: &[usize]) -> Tensor {
    let mut rng = StdRng::seed_from_u64(7 + r);
    let n: usize = dims.iter().product();
    let data: Vec<f32> = (0..n).map(|_| rng.gen_range(-3.0..5.0)).collect();
    Tensor::from_vec(data, dims, &Device::Cpu).unwrap()
}

fn syncbn_child(out: &Path) {
    let group = nextdet_dist::world();
    let (rank, world) = (group.rank() as u64, group.world_size());
    let store = ParamStore::new(&Device::Cpu, 0);
    let root = store.root();
    let mut results = HashMap::new();
    for (layer, rows, rest) in [("bn4d", [3usize, 2], vec![4usize, 5, 5]), ("bn2d", [5, 4], vec![4])] {
        let bn = BatchNorm::new(&root.pp(layer), 4).unwrap().synced(true);
        let mut affine = HashMap::new();
        affine.insert(format!("{layer}.weight"), bn_input(90, &[4]));
        affine.insert(format!("{layer}.bias"), bn_input(91, &[4]));
        store.load(&affine).unwrap();
        // this process's rows: its rank's, or every rank's in one process
        let mine: Vec<u64> = if world == 1 { vec![0, 1] } else { vec![rank] };
        let part = |r: u64, salt: u64| {
            let mut dims = vec![rows[r as usize]];
            dims.extend(&rest);
            bn_input(salt + 10 * r, &dims)
        };
        let xs: Vec<Tensor> = mine.iter().map(|&r| part(r, 0)).collect();
        let ws: Vec<Tensor> = mine.iter().map(|&r| part(r, 1)).collect();
        let x = Var::from_tensor(&Tensor::cat(&xs, 0).unwrap()).unwrap();
        let w = Tensor::cat(&ws, 0).unwrap();
        let y = bn.forward(x.as_tensor(), true).unwrap();
        let loss = (&y * &w).unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        let params: HashMap<String, Tensor> = store.tensors().into_iter().collect();
        let trainable: HashMap<String, Var> = store.trainable().into_iter().collect();
        let sum_over_ranks = |t: &Tensor| {
            let mut v = t.to_vec1::<f32>().unwrap();
            group.all_reduce_f32(&mut v, nextdet_dist::ReduceOp::Sum).unwrap();
            Tensor::new(v, &Device::Cpu).unwrap()
        };
        let dweight = sum_over_ranks(grads.get(trainable[&format!("{layer}.weight")].as_tensor()).unwrap());
        let dbias = sum_over_ranks(grads.get(trainable[&format!("{layer}.bias")].as_tensor()).unwrap());
        results.insert(format!("{layer}.y"), y.detach());
        results.insert(format!("{layer}.dx"), grads.get(x.as_tensor()).unwrap().clone());
        results.insert(format!("{layer}.dweight"), dweight);
        results.insert(format!("{layer}.dbias"), dbias);
        for key in ["running_mean", "running_var", "num_batches_tracked"] {
            let t = params[&format!("{layer}.{key}")].to_dtype(DType::F32).unwrap();
            results.insert(format!("{layer}.{key}"), t.reshape(t.elem_count()).unwrap());
        }
    }
    candle_core::safetensors::save(&results, out.join(format!("rank{rank}.safetensors"))).unwrap();
}

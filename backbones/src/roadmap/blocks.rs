//! The two residual blocks of the roadmap, named as `tests/reference/roadmap_ref.py` names them:
//! spatial conv first (ConvNeXt's block: `dwconv`, `norm`, `pwconv1`, `norm1`, `act`, `pwconv2`,
//! `norm2`, `gamma`) or in the middle (torchvision's bottleneck in `torchvision/models/resnet.py`:
//! `conv1`, `norm1`, `conv2`, `norm2`, `conv3`, `norm3`, `act`), each with the shortcut
//! `downsample.0` (1x1 conv) and `downsample.1` (norm) when it changes width or resolution.

use super::config::{ActKind, BlockKind, NormChoice, RoadmapConfig};
use super::layers::{act, act_cost, Conv, Linear, Norm};
use crate::layers::DropRng;
use candle_core::{Result, Tensor};
use nextdet_analysis::{CostTree, Shape};
use nextdet_ops::{Init, Scope};

/// The shortcut of a block that changes width or resolution: 1x1 conv (stride `s`), then norm.
struct Shortcut {
    conv: Conv,
    norm: Norm,
}

impl Shortcut {
    /// `None` where the block keeps its input's width and resolution (an identity shortcut).
    fn new(scope: &Scope, inp: usize, out: usize, stride: usize, cfg: &RoadmapConfig) -> Result<Option<Self>> {
        if stride == 1 && inp == out {
            return Ok(None);
        }
        let s = scope.pp("downsample");
        let bias = cfg.norm != NormChoice::Bn;
        Ok(Some(Self {
            conv: Conv::new(&s.pp(0), inp, out, 1, stride, 0, false, bias)?,
            norm: Norm::new(&s.pp(1), cfg.norm, out)?,
        }))
    }

    fn forward(this: &Option<Self>, x: &Tensor, train: bool) -> Result<Tensor> {
        match this {
            Some(s) => s.norm.forward_nchw(&s.conv.forward(x)?, train),
            None => Ok(x.clone()),
        }
    }

    fn cost(this: &Option<Self>, x: &[usize], tree: &mut CostTree) -> Result<()> {
        if let Some(s) = this {
            let y = s.conv.cost("downsample.0", x, tree)?;
            s.norm.cost_nchw("downsample.1", &y, tree)?;
        }
        Ok(())
    }
}

/// What both blocks share: layer scale, stochastic depth and the activation.
struct Common {
    gamma: Option<Tensor>,
    act: ActKind,
    drop_path: f64,
    rng: DropRng,
}

impl Common {
    fn new(scope: &Scope, out: usize, cfg: &RoadmapConfig, drop_path: f64, rng: DropRng) -> Result<Self> {
        let gamma =
            if cfg.layer_scale > 0.0 { Some(scope.param("gamma", out, Init::Const(cfg.layer_scale))?) } else { None };
        Ok(Self { gamma, act: cfg.act, drop_path, rng })
    }

    /// `shortcut + drop_path(gamma * y)` for the NCHW branch output `y`.
    fn residual(&self, y: Tensor, shortcut: &Tensor, train: bool) -> Result<Tensor> {
        let y = match &self.gamma {
            Some(g) => y.broadcast_mul(&g.reshape((1, g.dim(0)?, 1, 1))?)?,
            None => y,
        };
        let mut rng = self.rng.lock().expect("drop-path rng");
        nextdet_ops::drop_path(&y, self.drop_path, train, &mut *rng)? + shortcut
    }
}

/// The spatial conv first: `dwconv` (stride `s`), then channels-last `norm`, `act` (unless
/// `one_act`), `pwconv1` (to `4 dim`), `norm1`, `act`, `pwconv2` (to `dim`), `norm2` (the two
/// norms unless `one_norm`), `gamma`; the activation after the residual unless `one_act`.
pub(super) struct SpatialFirst {
    dwconv: Conv,
    norm: Norm,
    pwconv1: Linear,
    norm1: Option<Norm>,
    pwconv2: Linear,
    norm2: Option<Norm>,
    shortcut: Option<Shortcut>,
    one_act: bool,
    common: Common,
}

impl SpatialFirst {
    fn new(s: &Scope, inp: usize, dim: usize, stride: usize, cfg: &RoadmapConfig, common: Common) -> Result<Self> {
        let (k, bn) = (cfg.kernel_size, cfg.norm == NormChoice::Bn);
        let pw_bias = !bn || cfg.one_norm;
        // the reference's `ChannelsLastBN` holds its `nn.BatchNorm2d` as `bn`
        let last = |name: &str, c| {
            if bn {
                Norm::new(&s.pp(name).pp("bn"), cfg.norm, c)
            } else {
                Norm::new(&s.pp(name), cfg.norm, c)
            }
        };
        let norm_n = |name: &str, c| if cfg.one_norm { Ok(None) } else { last(name, c).map(Some) };
        Ok(Self {
            dwconv: Conv::new(&s.pp("dwconv"), inp, inp, k, stride, k / 2, cfg.depthwise, !bn)?,
            norm: last("norm", inp)?,
            pwconv1: Linear::new(&s.pp("pwconv1"), inp, 4 * dim, pw_bias)?,
            norm1: norm_n("norm1", 4 * dim)?,
            pwconv2: Linear::new(&s.pp("pwconv2"), 4 * dim, dim, pw_bias)?,
            norm2: norm_n("norm2", dim)?,
            shortcut: Shortcut::new(s, inp, dim, stride, cfg)?,
            one_act: cfg.one_act,
            common,
        })
    }

    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let a = self.common.act;
        let mut y = self.norm.forward_last(&self.dwconv.forward(x)?.permute((0, 2, 3, 1))?, train)?;
        if !self.one_act {
            y = act(&y, a)?;
        }
        y = self.pwconv1.forward(&y)?;
        if let Some(n) = &self.norm1 {
            y = n.forward_last(&y, train)?;
        }
        y = self.pwconv2.forward(&act(&y, a)?)?;
        if let Some(n) = &self.norm2 {
            y = n.forward_last(&y, train)?;
        }
        let shortcut = Shortcut::forward(&self.shortcut, x, train)?;
        let y = self.common.residual(y.permute((0, 3, 1, 2))?, &shortcut, train)?;
        if self.one_act {
            Ok(y)
        } else {
            act(&y, a)
        }
    }

    fn cost(&self, x: &[usize], tree: &mut CostTree) -> Result<Shape> {
        let a = self.common.act;
        let y = self.dwconv.cost("dwconv", x, tree)?;
        let nhwc = [y[0], y[2], y[3], y[1]];
        self.norm.cost_last("norm", &nhwc, tree)?;
        if !self.one_act {
            act_cost("act", &nhwc, a, tree);
        }
        let h = self.pwconv1.cost("pwconv1", &nhwc, tree)?;
        if let Some(n) = &self.norm1 {
            n.cost_last("norm1", &h, tree)?;
        }
        act_cost("act", &h, a, tree);
        let o = self.pwconv2.cost("pwconv2", &h, tree)?;
        if let Some(n) = &self.norm2 {
            n.cost_last("norm2", &o, tree)?;
        }
        if let Some(g) = &self.common.gamma {
            tree.param("gamma", g.dims());
        }
        Shortcut::cost(&self.shortcut, x, tree)?;
        let out = vec![o[0], o[3], o[1], o[2]];
        Ok(if self.one_act { out } else { act_cost("act", &out, a, tree) })
    }
}

/// The spatial conv in the middle: `conv1` 1x1, `norm1`, `act`, `conv2` kxk (stride `s`),
/// `norm2`, `act`, `conv3` 1x1, `norm3`, `gamma`, the residual, `act`. A bottleneck's hidden
/// width is `dim` and its output `4 dim`; an inverted one's hidden width `4 dim`, output `dim`.
pub(super) struct MiddleSpatial {
    convs: [(Conv, Norm); 3],
    shortcut: Option<Shortcut>,
    common: Common,
}

impl MiddleSpatial {
    fn new(s: &Scope, inp: usize, dim: usize, stride: usize, cfg: &RoadmapConfig, common: Common) -> Result<Self> {
        let (k, bias) = (cfg.kernel_size, cfg.norm != NormChoice::Bn);
        let (hidden, out) = match cfg.block {
            BlockKind::Bottleneck => (dim, 4 * dim),
            BlockKind::Inverted => (4 * dim, dim),
        };
        let norm = |i: usize, c| Norm::new(&s.pp(format!("norm{i}")), cfg.norm, c);
        Ok(Self {
            convs: [
                (Conv::new(&s.pp("conv1"), inp, hidden, 1, 1, 0, false, bias)?, norm(1, hidden)?),
                (Conv::new(&s.pp("conv2"), hidden, hidden, k, stride, k / 2, cfg.depthwise, bias)?, norm(2, hidden)?),
                (Conv::new(&s.pp("conv3"), hidden, out, 1, 1, 0, false, bias)?, norm(3, out)?),
            ],
            shortcut: Shortcut::new(s, inp, out, stride, cfg)?,
            common,
        })
    }

    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut y = x.clone();
        for (i, (conv, norm)) in self.convs.iter().enumerate() {
            y = norm.forward_nchw(&conv.forward(&y)?, train)?;
            if i < 2 {
                y = act(&y, self.common.act)?;
            }
        }
        let shortcut = Shortcut::forward(&self.shortcut, x, train)?;
        act(&self.common.residual(y, &shortcut, train)?, self.common.act)
    }

    fn cost(&self, x: &[usize], tree: &mut CostTree) -> Result<Shape> {
        let mut y = x.to_vec();
        for (i, (conv, norm)) in self.convs.iter().enumerate() {
            y = conv.cost(&format!("conv{}", i + 1), &y, tree)?;
            y = norm.cost_nchw(&format!("norm{}", i + 1), &y, tree)?;
            if i < 2 {
                y = act_cost("act", &y, self.common.act, tree);
            }
        }
        if let Some(g) = &self.common.gamma {
            tree.param("gamma", g.dims());
        }
        Shortcut::cost(&self.shortcut, x, tree)?;
        Ok(act_cost("act", &y, self.common.act, tree))
    }
}

/// One block of either kind.
pub(super) enum Block {
    /// Spatial conv first.
    SpatialFirst(SpatialFirst),
    /// Spatial conv in the middle.
    MiddleSpatial(MiddleSpatial),
}

impl Block {
    /// The block taking `inp` channels for a stage of width `dim`, with `stride` on its spatial
    /// conv and shortcut, parameters under `scope`.
    pub fn new(
        scope: &Scope,
        inp: usize,
        dim: usize,
        stride: usize,
        cfg: &RoadmapConfig,
        drop_path: f64,
        rng: DropRng,
    ) -> Result<Self> {
        let out = match cfg.block {
            BlockKind::Bottleneck => 4 * dim,
            BlockKind::Inverted => dim,
        };
        let common = Common::new(scope, out, cfg, drop_path, rng)?;
        Ok(if cfg.spatial_first {
            Block::SpatialFirst(SpatialFirst::new(scope, inp, dim, stride, cfg, common)?)
        } else {
            Block::MiddleSpatial(MiddleSpatial::new(scope, inp, dim, stride, cfg, common)?)
        })
    }

    /// `[N, inp, H, W]` to `[N, out, H / s, W / s]`.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        match self {
            Block::SpatialFirst(b) => b.forward(x, train),
            Block::MiddleSpatial(b) => b.forward(x, train),
        }
    }

    /// Describes the block on NCHW `x`; returns its output shape.
    pub fn cost(&self, x: &[usize], tree: &mut CostTree) -> Result<Shape> {
        match self {
            Block::SpatialFirst(b) => b.cost(x, tree),
            Block::MiddleSpatial(b) => b.cost(x, tree),
        }
    }
}

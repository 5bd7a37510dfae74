//! Every WGSL pass against its CPU reference (tests/common/reference.rs), on whatever adapter is
//! present (lavapipe in CI). Each pass runs on inputs read back from the device, so a mismatch names
//! the pass that made it.

mod common;

use common::random_dataset;
use common::reference::{self as cpu, Output, OutputGrad};
use infnerf::config::{Config, Precision};
use infnerf::field::SplitMix64;
use infnerf::gpu::kernel::Recorder;
use infnerf::gpu::records::{
    guard, AdamUniforms, Batch, GpuCamera, GuardUniforms, LossUniforms, Patch, Ray, RayGrad, RayOutput, Sample,
    Sampling, GRAD_SLOTS, GRAD_SLOT_WORDS, LOSS_TERMS, MAX_CUTS, NO_CUT, OCC_PHASES, SANITIZED_SLOTS, STATS_WORDS,
};
use infnerf::gpu::shader::ADAM_BLOCK;
use infnerf::gpu::unrolled::WeightSource;
use infnerf::gpu::Gpu;
use infnerf::stability::LossScaler;
use infnerf::trainer::model::Model;
use infnerf::trainer::{StepPlan, Trainer};
use std::collections::BTreeSet;
use std::sync::Arc;

/// The settings of these tests: a depth-2 tree (tens of nodes over three levels), 4 patches of 8x8
/// rays with 32 samples each, rendered at two cuts with unequal weights.
fn config() -> Config {
    let mut c = Config::tiny();
    c.field.max_depth = 2;
    c.field.finest_resolution = 16;
    c.train.occupancy_resolution = 16;
    c.loss.coarse_cuts = 1;
    c.loss.level_gamma = -0.5;
    c.loss.lambda_mse = 0.7;
    c
}

/// Parameter pages of at most 1 MiB: three or more pages of whole nodes for `config()`'s tree.
fn paged_config() -> Config {
    let mut c = config();
    c.train.max_buffer_mb = 1;
    c
}

/// A trainer with one step's patches, targets and uniforms uploaded (step 0, chunk 0), nothing run.
struct Fixture {
    trainer: Trainer,
    plan: StepPlan,
    rays: u32,
}

impl Fixture {
    /// On the tree the training cameras make (depth 2), rendering cuts 2 and 1.
    fn new(gpu: Arc<Gpu>, config: Config, seed: u64) -> Self {
        let mut dataset = random_dataset(4, 24, seed);
        // one camera with lens distortion, so the undistortion runs in the kernel
        dataset.train[1].camera.distortion = [-0.1, 0.02, 0.001, -0.002];
        let trainer = Trainer::new(gpu, config, &dataset).unwrap();
        assert_eq!(trainer.octree.max_depth(), 2);
        Self::on(trainer, &[2, 1])
    }

    /// On the full tree of depth `depth` (8^depth leaves), rendering `cuts`.
    fn full_tree(gpu: Arc<Gpu>, mut config: Config, seed: u64, depth: u32, cuts: &[u32]) -> Self {
        config.field.max_depth = depth;
        let dataset = random_dataset(4, 24, seed);
        let octree = infnerf::octree::Octree::full(depth, config.field.finest_resolution);
        let params = infnerf::field::FieldLayout::new(&config.field).init_params(octree.nodes.len(), seed);
        Self::on(Trainer::with_state(gpu, config, &dataset, octree, &params).unwrap(), cuts)
    }

    fn on(mut trainer: Trainer, cuts: &[u32]) -> Self {
        assert_eq!(trainer.chunks(), 1);
        let plan = trainer.plan_step();
        let mut fixture = Self { trainer, plan, rays: 0 };
        fixture.set_cuts(cuts);
        fixture
    }

    /// Renders the cuts `cuts` (finest first) with the level weights of the settings.
    fn set_cuts(&mut self, cuts: &[u32]) {
        self.plan.cuts = cuts.to_vec();
        self.plan.cut_weights = self.trainer.level_weights(cuts);
        self.upload();
    }

    fn upload(&mut self) {
        self.rays = self.trainer.upload_chunk(0, &self.plan, 0);
    }

    fn cuts(&self) -> u32 {
        self.plan.cuts.len() as u32
    }

    fn slots(&self) -> usize {
        (self.rays * self.cuts()) as usize
    }

    fn n_samples(&self) -> usize {
        self.slots() * self.trainer.config.train.samples_per_ray_at(self.trainer.step) as usize
    }

    /// The batch uniforms upload_chunk wrote.
    fn batch(&self) -> Batch {
        self.trainer.training_batch(0, 0, self.rays, &self.plan.cuts)
    }

    fn sampling(&self) -> Sampling {
        self.trainer.sampling_uniforms(0, true)
    }

    /// The loss uniforms of the plan, as the loss passes must see them.
    fn loss(&self) -> LossUniforms {
        let loss = self.trainer.loss_uniforms(self.trainer.step, &self.plan);
        assert_eq!(loss.lambdas[0][0], self.trainer.config.loss.lambda_mse);
        assert_eq!(&loss.cut_weights[..self.plan.cut_weights.len()], &self.plan.cut_weights[..]);
        loss
    }

    /// Records with `record`, submits and waits.
    fn run(&self, record: impl FnOnce(&Trainer, &mut Recorder)) {
        let mut rec = Recorder::new(&self.trainer.gpu, "kernel test");
        record(&self.trainer, &mut rec);
        rec.submit();
        self.trainer.gpu.wait().unwrap();
    }

    fn read<T: bytemuck::Pod>(&self, buffer: &wgpu::Buffer, count: usize) -> Vec<T> {
        self.trainer.gpu.read(buffer, count).unwrap()
    }

    fn read_paged(&self, pages: &[wgpu::Buffer]) -> Vec<f32> {
        Model::read_paged(&self.trainer.gpu, pages, &self.trainer.model.paging).unwrap()
    }

    fn write_paged(&self, pages: &[wgpu::Buffer], values: &[f32]) {
        Model::write_paged(&self.trainer.gpu, pages, &self.trainer.model.paging, values).unwrap();
    }

    /// Random parameters that make every activation matter (the initial hash entries are tiny).
    fn randomize_params(&self, seed: u64) -> Vec<f32> {
        let mut rng = SplitMix64(seed);
        let l = &self.trainer.layout;
        let params: Vec<f32> = (0..self.trainer.n_params())
            .map(|i| {
                let scale = if i % u64::from(l.node_params) < u64::from(l.hash_params) { 1.0 } else { 0.6 };
                (rng.next_f32() * 2.0 - 1.0) * scale
            })
            .collect();
        self.trainer.write_params(&params).unwrap();
        params
    }

    fn rays(&self) -> Vec<Ray> {
        self.read(&self.trainer.train.rays, self.rays as usize)
    }

    fn samples(&self) -> Vec<Sample> {
        self.read(&self.trainer.train.samples, self.n_samples())
    }

    fn field_out(&self) -> Vec<[f64; 4]> {
        let f: Vec<[f32; 4]> = self.read(&self.trainer.train.field_out, self.n_samples());
        f.iter().map(|v| v.map(f64::from)).collect()
    }

    /// The device's outputs (node_margin is the reference's alone: left 0).
    fn outputs(&self) -> Vec<Output> {
        let o: Vec<RayOutput> = self.read(&self.trainer.train.outputs, self.slots());
        o.iter()
            .map(|o| Output {
                rgb: o.rgb.map(f64::from),
                opacity: f64::from(o.opacity),
                depth: f64::from(o.depth),
                evaluated: o.evaluated as u32,
                node: o.node as i64,
                ..Default::default()
            })
            .collect()
    }

    fn ray_grads(&self) -> Vec<OutputGrad> {
        let g: Vec<RayGrad> = self.read(&self.trainer.train.ray_grads, self.slots());
        g.iter()
            .map(|g| OutputGrad { rgb: g.rgb.map(f64::from), opacity: f64::from(g.opacity), depth: f64::from(g.depth) })
            .collect()
    }

    /// The per-sample gradients (f16 under mixed precision), the loss scale taken out.
    fn sample_grads(&self) -> Vec<[f64; 4]> {
        let scale = self.loss_scale();
        if self.trainer.model.half {
            let g: Vec<[u16; 4]> = self.read(&self.trainer.train.sample_grads, self.n_samples());
            g.iter().map(|v| v.map(|h| f64::from(cpu::f16_to_f32(h)) / scale)).collect()
        } else {
            let g: Vec<[f32; 4]> = self.read(&self.trainer.train.sample_grads, self.n_samples());
            g.iter().map(|v| v.map(|x| f64::from(x) / scale)).collect()
        }
    }

    /// The parameter gradients, the loss scale taken out.
    fn grads(&self) -> Vec<f64> {
        let scale = self.loss_scale();
        self.read_paged(&self.trainer.model.grads).into_iter().map(|g| f64::from(g) / scale).collect()
    }

    /// The loss scale the per-sample gradients carry (1 in f32).
    fn loss_scale(&self) -> f64 {
        f64::from(self.read::<f32>(&self.trainer.model.guard, guard::WORDS as usize)[guard::LOSS_SCALE as usize])
    }

    /// The parameters the field passes see: under mixed precision, hash entries rounded to f16.
    fn as_read(&self, params: &[f32]) -> Vec<f64> {
        if self.trainer.model.half {
            to_f64(&cpu::with_f16_tables(&self.trainer.layout, params))
        } else {
            to_f64(params)
        }
    }

    /// rays -> samples -> node_scan -> scatter -> field_forward -> render_forward.
    fn forward(&self) {
        let (rays, cuts) = (self.rays, self.cuts());
        self.run(|t, rec| t.record_forward(rec, &t.train, rays, cuts));
    }

    /// dLoss/d(rgb, opacity, depth) of every slot: random values written into ray_grads, then
    /// loss_mse adds its colour gradient (so the opacity and depth paths carry gradient too).
    fn losses_with_injected(&self, seed: u64) -> Vec<OutputGrad> {
        let mut rng = SplitMix64(seed);
        let mut value = |scale: f32| (rng.next_f32() * 2.0 - 1.0) * scale;
        let injected: Vec<RayGrad> = (0..self.slots())
            .map(|_| RayGrad {
                rgb: [value(1e-3), value(1e-3), value(1e-3)],
                opacity: value(2e-3),
                depth: value(1e-3),
                ..Default::default()
            })
            .collect();
        self.trainer.gpu.write(&self.trainer.train.ray_grads, &injected);
        let slots = self.slots() as u32;
        self.run(|t, rec| rec.dispatch(&t.kernels.loss_mse, &t.train.groups.loss_mse, slots));
        injected
            .iter()
            .map(|g| OutputGrad { rgb: g.rgb.map(f64::from), opacity: f64::from(g.opacity), depth: f64::from(g.depth) })
            .collect()
    }

    /// render_backward -> field_backward into zeroed gradients.
    fn backward(&self) {
        for page in &self.trainer.model.grads {
            self.trainer.gpu.write(page, &vec![0.0f32; (page.size() / 4) as usize]);
        }
        let slots = self.slots() as u32;
        self.run(|t, rec| t.record_backward(rec, &t.train, slots));
    }
}

fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| f64::from(x)).collect()
}

fn active(samples: &[Sample]) -> impl Iterator<Item = usize> + '_ {
    (0..samples.len()).filter(|&s| samples[s].node != cpu::NO_NODE)
}

#[test]
fn undistortion_inverts_the_opencv_model() {
    let k = [-0.12, 0.03, 0.001, -0.002];
    for p in [[0.1, -0.2], [0.4, 0.3], [-0.5, 0.05]] {
        let back = cpu::undistort(cpu::distort(p, k), k);
        assert!((back[0] - p[0]).abs() < 1e-9 && (back[1] - p[1]).abs() < 1e-9);
    }
}

#[test]
fn rays_match_reference_in_training_and_rendering() {
    let f = Fixture::new(common::gpu(), config(), 1);
    let t = &f.trainer;
    let cameras: Vec<GpuCamera> = f.read(&t.train.cameras, 4);
    let compare = |batch: &Batch, patches: &[Patch], targets: &[u32]| {
        let gpu_rays = f.rays();
        let cpu_rays = cpu::rays(batch, &cameras, patches, targets);
        let mut hits = 0;
        for (r, (g, c)) in gpu_rays.iter().zip(&cpu_rays).enumerate() {
            for k in 0..3 {
                assert!((g.origin[k] - c.origin[k]).abs() < 1e-5, "ray {r}: {g:?} vs {c:?}");
                assert!((g.dir[k] - c.dir[k]).abs() < 1e-5, "ray {r}: {g:?} vs {c:?}");
            }
            assert!((g.near - c.near).abs() < 1e-4 && (g.far - c.far).abs() < 1e-4, "ray {r}: {g:?} vs {c:?}");
            for k in 0..4 {
                assert!((g.target_rgb[k] - c.target_rgb[k]).abs() < 1e-6, "ray {r} target: {g:?} vs {c:?}");
            }
            assert_eq!((g.pixel, g.background), (c.pixel, c.background), "ray {r}");
            assert!((g.pixel_radius - c.pixel_radius).abs() < 1e-7, "ray {r}");
            hits += u32::from(c.far > c.near);
        }
        assert!(hits > batch.n_rays / 2, "most rays should hit the cube ({hits} of {})", batch.n_rays);
        cpu_rays
    };

    // training: full resolution and coarser levels, patches running off the image's edge, the
    // distorted camera, random backgrounds behind transparent targets
    let patches = [
        Patch { view: 0, level: 0, x0: 3, y0: 5 },
        Patch { view: 1, level: 0, x0: 20, y0: 0 },
        Patch { view: 1, level: 1, x0: 2, y0: 4 },
        Patch { view: 2, level: 2, x0: 0, y0: 1 },
    ];
    let mut rng = SplitMix64(3);
    let targets: Vec<u32> = (0..f.rays).map(|_| rng.next_u64() as u32).collect();
    let mut batch = f.batch();
    batch.seed = 1234;
    assert_eq!((batch.training, batch.random_background), (1, 1));
    t.gpu.write(&t.train.patches, &patches);
    t.gpu.write(&t.train.targets, &targets);
    t.gpu.write(&t.train.batch, &[batch]);
    f.run(|t, rec| rec.dispatch(&t.kernels.rays, &t.train.groups.rays, batch.n_rays));
    let cpu_rays = compare(&batch, &patches, &targets);
    let off_image = cpu_rays.iter().filter(|r| r.target_rgb[3] == 0.0).count();
    assert!(off_image > 0 && off_image < cpu_rays.len() / 2, "{off_image} rays off their image");
    assert!(cpu_rays.iter().filter(|r| r.background != 0).count() > cpu_rays.len() / 2, "random backgrounds");

    // rendering: a view's pixels from ray_offset, no jitter, no targets
    let batch = Batch { training: 0, view: 1, ray_offset: 37, patch_size: 1, random_background: 0, ..batch };
    t.gpu.write(&t.train.batch, &[batch]);
    f.run(|t, rec| rec.dispatch(&t.kernels.rays, &t.train.groups.rays, batch.n_rays));
    let cpu_rays = compare(&batch, &[], &[]);
    assert_eq!(cpu_rays[0].pixel, 37);
}

/// The samples of a two-cut batch, their node counts, the scan and the node-sorted active list.
fn samples_scan_and_scatter_match(f: &Fixture) {
    let t = &f.trainer;
    let paging = t.model.paging;
    let n_samples = f.n_samples() as u32;
    f.run(|t, rec| {
        rec.dispatch(&t.kernels.rays, &t.train.groups.rays, f.rays);
        t.record_samples(rec, &t.train, &t.kernels.samples, &t.train.groups.samples, n_samples);
    });
    let (batch, rays, samples) = (f.batch(), f.rays(), f.samples());
    let cpu_samples = cpu::samples(&batch, &f.sampling(), &rays, &t.octree, &[], 0.0);
    let n = samples.len();
    let mut mismatched = 0;
    for (s, (g, c)) in samples.iter().zip(&cpu_samples).enumerate() {
        assert_eq!(g.ray, c.ray, "sample {s}");
        assert!((g.t - c.t).abs() < 1e-5 && (g.delta - c.delta).abs() < 1e-6, "sample {s}: {g:?} vs {c:?}");
        assert!((0..3).all(|k| (g.pos[k] - c.pos[k]).abs() < 1e-5), "sample {s}: {g:?} vs {c:?}");
        mismatched += usize::from(g.node != c.node);
    }
    // exp2 may round differently on the device: a sample exactly at a gsd boundary may flip level
    assert!(mismatched * 1000 <= n, "{mismatched} of {n} samples chose another node");

    // every cut sees the same points; a sample's node at a cut is its finest-cut node's ancestor at
    // that depth (the level choice capped at the cut)
    let per_cut = f.rays as usize * t.config.train.samples_per_ray as usize;
    let ancestor = |mut node: u32, depth: u32| {
        while t.octree.nodes[node as usize].depth > depth {
            node = t.octree.nodes[node as usize].parent;
        }
        node
    };
    let mut per_depth = vec![vec![0usize; t.octree.max_depth() as usize + 1]; f.cuts() as usize];
    for c in 0..f.cuts() as usize {
        let cut = f.plan.cuts[c];
        for k in 0..per_cut {
            let (finest, this) = (&samples[k], &samples[c * per_cut + k]);
            assert_eq!(
                (finest.t.to_bits(), finest.delta.to_bits(), finest.pos.map(f32::to_bits), finest.ray),
                (this.t.to_bits(), this.delta.to_bits(), this.pos.map(f32::to_bits), this.ray),
                "sample {k} differs between cuts"
            );
            assert_eq!(finest.node == cpu::NO_NODE, this.node == cpu::NO_NODE);
            if this.node != cpu::NO_NODE {
                let depth = t.octree.nodes[this.node as usize].depth;
                assert!(depth <= cut, "cut {cut}: a sample at depth {depth}");
                assert_eq!(this.node, ancestor(finest.node, cut), "cut {cut}, sample {k}");
                per_depth[c][depth as usize] += 1;
            }
        }
    }
    let coarse = f.plan.cuts[1] as usize;
    assert!(per_depth[0].iter().filter(|&&n| n > 0).count() >= 2, "the finest cut uses several depths: {per_depth:?}");
    assert!(per_depth[0][coarse + 1..].iter().sum::<usize>() > 0, "the coarser cut caps some: {per_depth:?}");

    // node_counts, node_scan
    let n_nodes = t.octree.nodes.len();
    let counts: Vec<u32> = f.read(&t.train.node_counts, n_nodes);
    assert_eq!(counts, cpu::node_counts(&samples, n_nodes), "node counts");
    let field_wg = t.shape.field_workgroup;
    let scan = cpu::node_scan(&counts, paging.nodes_per_page, paging.n_pages, field_wg);
    assert_eq!(f.read::<u32>(&t.train.node_offsets, n_nodes), scan.offsets, "node offsets");
    assert_eq!(f.read::<u32>(&t.train.wg_first, n_nodes + 1), scan.wg_first, "first workgroups");
    let args: Vec<u32> = f.read(&t.train.dispatch_args, 3 * paging.n_pages as usize);
    assert_eq!(args, scan.dispatch_args.concat(), "per-page dispatch sizes");
    assert!(scan.dispatch_args.iter().filter(|a| a[0] > 0).count() >= 2, "several pages have samples: {args:?}");
    assert!(counts.iter().any(|&c| c > 2 * field_wg), "some node spans several workgroups");
    let active_count: Vec<u32> = f.read(&t.train.active_count, 1);
    assert_eq!(active_count[0], scan.active);

    // ranks number each node's samples 0..count; scatter puts each at its node's offset plus rank
    let mut ranks: Vec<Vec<u32>> = vec![Vec::new(); n_nodes];
    for s in active(&samples) {
        ranks[samples[s].node as usize].push(samples[s].rank);
    }
    for (node, r) in ranks.iter_mut().enumerate() {
        r.sort_unstable();
        assert!(r.iter().copied().eq(0..counts[node]), "ranks of node {node}");
    }
    let list: Vec<u32> = f.read(&t.train.active_list, scan.active as usize);
    for s in active(&samples) {
        let sample = &samples[s];
        assert_eq!(list[(scan.offsets[sample.node as usize] + sample.rank) as usize], s as u32);
    }
    let nodes: Vec<u32> = list.iter().map(|&s| samples[s as usize].node).collect();
    assert!(nodes.windows(2).all(|w| w[0] <= w[1]), "the active list is sorted by node");
    let listed: BTreeSet<u32> = list.iter().copied().collect();
    assert!(listed.iter().copied().eq(active(&samples).map(|s| s as u32)), "exactly the active samples");
}

/// On three parameter pages of the cameras' depth-2 tree.
#[test]
fn samples_scan_and_scatter_match_reference_at_every_cut() {
    let f = Fixture::new(common::gpu(), paged_config(), 2);
    assert!(f.trainer.model.paging.n_pages >= 3, "{:?}", f.trainer.model.paging);
    samples_scan_and_scatter_match(&f);
}

/// On a full depth-3 tree: more nodes than the scan's workgroup has invocations, so each scans a run
/// of several nodes; small hash tables keep its pages small.
#[test]
fn samples_scan_and_scatter_match_reference_on_a_deep_tree() {
    let mut config = paged_config();
    config.field.log2_table_size = 6;
    config.train.occupancy_resolution = 8;
    let f = Fixture::full_tree(common::gpu(), config, 16, 3, &[3, 1]);
    assert!(f.trainer.octree.nodes.len() > 2 * 256, "{} nodes", f.trainer.octree.nodes.len());
    assert!(f.trainer.model.paging.n_pages >= 2, "{:?}", f.trainer.model.paging);
    samples_scan_and_scatter_match(&f);
}

/// A grid with a dense blob: samples in empty cells are skipped at every cut alike, but for the
/// explored few, and the active list holds exactly the rest.
#[test]
fn occupancy_skips_empty_cells_and_compacts_the_rest() {
    let f = Fixture::new(common::gpu(), config(), 7);
    let t = &f.trainer;
    let res = t.config.train.occupancy_resolution;
    let (grid, mean) = blob_grid(t);
    let sampling = Sampling { skip: 1, explore: 0.1, ..f.sampling() };
    t.gpu.write(&t.train.sampling, &[sampling]);
    let n_samples = f.n_samples() as u32;
    f.run(|t, rec| {
        rec.dispatch(&t.kernels.rays, &t.train.groups.rays, f.rays);
        t.record_samples(rec, &t.train, &t.kernels.samples, &t.train.groups.samples, n_samples);
    });
    let (rays, samples) = (f.rays(), f.samples());
    let cpu_samples = cpu::samples(&f.batch(), &sampling, &rays, &t.octree, &grid, mean);
    let n = samples.len();
    let mismatched = samples.iter().zip(&cpu_samples).filter(|(g, c)| g.node != c.node).count();
    assert!(mismatched * 1000 <= n, "{mismatched} of {n} samples differ");
    let per_cut = n / 2;
    for k in 0..per_cut {
        assert_eq!(samples[k].node == cpu::NO_NODE, samples[per_cut + k].node == cpu::NO_NODE, "sample {k}");
    }
    let active: Vec<u32> = active(&samples).map(|s| s as u32).collect();
    assert!(!active.is_empty() && active.len() < n / 2, "{} of {n} active", active.len());
    // about `explore` of the samples in empty cells are kept, the rest skipped
    let threshold = |s: &Sample| (sampling.threshold / s.delta).min(mean);
    let empty = |s: &Sample| s.delta > 0.0 && grid[cpu::occupancy_cell(s.pos, res)] < threshold(s);
    let unskipped = cpu::samples(&f.batch(), &f.sampling(), &rays, &t.octree, &[], 0.0);
    let in_empty: Vec<usize> = (0..n).filter(|&s| empty(&unskipped[s])).collect();
    let explored = in_empty.iter().filter(|&&s| samples[s].node != cpu::NO_NODE).count();
    let fraction = explored as f64 / in_empty.len() as f64;
    assert!(in_empty.len() > 1000 && (0.07..0.13).contains(&fraction), "{explored} of {} kept", in_empty.len());

    let count: Vec<u32> = f.read(&t.train.active_count, 1);
    assert_eq!(count[0] as usize, active.len());
    let mut list: Vec<u32> = f.read(&t.train.active_list, active.len());
    let nodes: Vec<u32> = list.iter().map(|&s| samples[s as usize].node).collect();
    assert!(nodes.windows(2).all(|w| w[0] <= w[1]), "the active list is sorted by node");
    list.sort_unstable();
    assert_eq!(list, active, "the list holds exactly the active samples");
}

/// The hierarchical and importance phases (SPEC §5), each against the CPU references: the
/// proposal's stratified samples at its cut, their field, each ray's CDF and the count of evaluated
/// samples; then the resampled samples at both cuts, which tile each ray and put about a bin's
/// probability mass of samples in it; then the field and render on them. With the grid, both skip
/// empty cells.
#[test]
fn proposal_cdf_and_resampling_match_reference() {
    for skip in [false, true] {
        let mut c = config();
        c.train.hierarchical_from = Some(0);
        c.train.proposal_samples = 24;
        c.train.resample_samples = 16;
        c.train.proposal_cut = 1;
        c.train.proposal_floor = 0.1;
        c.train.occupancy_warmup = if skip { 0 } else { 1000 };
        let f = Fixture::new(common::gpu(), c, 11);
        let t = &f.trainer;
        assert!(t.resamples_at(0));
        let params = to_f64(&f.randomize_params(3));
        let proposal = t.train.proposal.as_ref().expect("a proposal workspace");
        let (grid, mean) = if skip { blob_grid(t) } else { (Vec::new(), 0.0) };
        let sampling = f.sampling();
        assert_eq!(sampling.skip, u32::from(skip));
        t.gpu.write(&t.model.counters, &[0u32]);
        f.run(|t, rec| {
            rec.dispatch(&t.kernels.rays, &t.train.groups.rays, f.rays);
            t.record_proposal(rec, &t.train, proposal, f.rays);
        });
        let (batch, rays) = (f.batch(), f.rays());
        let pb = t.proposal_batch(&batch);
        assert_eq!((pb.n_cuts, pb.cuts[0], pb.samples_per_ray), (1, 1, 24));
        let m = (f.rays * 24) as usize;
        let samples: Vec<Sample> = f.read(&t.train.samples, m);
        let cpu_samples = cpu::samples(&pb, &sampling, &rays, &t.octree, &grid, mean);
        let differ = samples.iter().zip(&cpu_samples).filter(|(g, c)| g.node != c.node).count();
        assert!(differ * 1000 <= m, "{differ} of {m} proposal samples chose another node");
        let active_count = active(&samples).count();
        if skip {
            assert!(active_count < m / 2, "{active_count} of {m}: the proposal skips empty cells");
        }
        let field: Vec<[f32; 4]> = f.read(&t.train.field_out, m);
        let field: Vec<[f64; 4]> = field.iter().map(|v| v.map(f64::from)).collect();
        let max_density = f64::from(t.config.field.max_density);
        let cpu_field = cpu::field_forward(&t.layout, &params, &t.octree, &samples, &rays, max_density);
        for s in active(&samples) {
            assert!((0..4).all(|k| (field[s][k] - cpu_field[s][k]).abs() <= 2e-5 * (1.0 + cpu_field[s][k].abs())));
        }
        let (cpu_cdf, evaluated) = cpu::proposal_cdf(&pb, sampling.proposal_floor, &samples, &field);
        let cdf = to_f64(&f.read::<f32>(&proposal.cdf, cpu_cdf.len()));
        for (i, (g, c)) in cdf.iter().zip(&cpu_cdf).enumerate() {
            assert!((g - c).abs() <= 2e-5, "cdf value {i}: {g} vs {c}");
        }
        assert_eq!(evaluated as usize, active_count);
        assert_eq!(f.read::<u32>(&t.model.counters, 1)[0], evaluated);
        // the proposal is not uniform: many rays put 1.5 times a uniform bin's mass in some bin
        let mass = |r: usize, b: usize| cdf[r * 25 + b + 1] - cdf[r * 25 + b];
        let peaked = (0..f.rays as usize).filter(|&r| (0..24).any(|b| mass(r, b) > 1.5 / 24.0)).count();
        assert!(peaked > f.rays as usize / 10, "{peaked} of {} rays have a bin of mass > 1.5/24", f.rays);

        // the resampled samples, at both cuts, from the device's CDF
        let n_samples = f.n_samples() as u32;
        f.run(|t, rec| t.record_samples(rec, &t.train, &t.kernels.resample, &proposal.resample, n_samples));
        let resampled = f.samples();
        let cpu_resampled = cpu::resample(&batch, 24, &sampling, &rays, &t.octree, &cdf, &grid, mean);
        let n = resampled.len();
        let differ = resampled.iter().zip(&cpu_resampled).filter(|(g, c)| g.node != c.node).count();
        assert!(differ * 1000 <= n, "{differ} of {n} resampled samples chose another node");
        let per_cut = n / 2;
        for (s, (g, c)) in resampled.iter().zip(&cpu_resampled).enumerate() {
            if g.node != cpu::NO_NODE && c.node != cpu::NO_NODE {
                assert!((g.t - c.t).abs() <= 1e-4 && (g.delta - c.delta).abs() <= 1e-4, "sample {s}: {g:?} vs {c:?}");
            }
            let twin = &resampled[(s + per_cut) % n];
            assert_eq!(g.node == cpu::NO_NODE, twin.node == cpu::NO_NODE, "sample {s}: the cuts skip alike");
        }
        // tiling and crowding, on the reference (the device's agree with it)
        let unskipped = cpu_resampled_unskipped(&f, &batch, &rays, &cdf);
        for (r, ray) in rays.iter().enumerate().filter(|(_, ray)| ray.far > ray.near) {
            let ray_samples = &unskipped[r * 16..(r + 1) * 16];
            let total: f32 = ray_samples.iter().map(|s| s.delta).sum();
            assert!((total - (ray.far - ray.near)).abs() <= 1e-4, "ray {r}: the intervals tile it");
            assert!(ray_samples.windows(2).all(|w| w[0].t <= w[1].t), "ray {r}: samples in order");
            let bin = (ray.far - ray.near) / 24.0;
            for b in 0..24 {
                let mass = mass(r, b);
                let inside = ray_samples.iter().filter(|s| ((s.t - ray.near) / bin).floor() as usize == b).count();
                assert!((inside as f64 - 16.0 * mass).abs() <= 2.0, "ray {r} bin {b}: {inside} samples, mass {mass}");
            }
        }
        if skip {
            assert!(active(&resampled).count() < n, "the resampled samples skip empty cells");
        }

        // field and render on the resampled samples
        f.run(|t, rec| {
            t.record_field_forward(rec, &t.train);
            rec.dispatch(&t.kernels.render_forward, &t.train.groups.render_forward, f.slots() as u32);
        });
        let field = f.field_out();
        let cpu_out = cpu::render_forward(&batch, &rays, &resampled, &field);
        for (slot, (g, c)) in f.outputs().iter().zip(&cpu_out).enumerate() {
            assert_eq!(g.evaluated, c.evaluated, "slot {slot}");
            assert!((0..3).all(|k| (g.rgb[k] - c.rgb[k]).abs() <= 2e-5), "slot {slot}: {g:?} vs {c:?}");
        }
    }
}

/// The reference's resampled samples without the grid (every sample placed).
fn cpu_resampled_unskipped(f: &Fixture, batch: &Batch, rays: &[Ray], cdf: &[f64]) -> Vec<Sample> {
    let sampling = Sampling { skip: 0, ..f.sampling() };
    cpu::resample(batch, 24, &sampling, rays, &f.trainer.octree, cdf, &[], 0.0)
}

/// A grid with a dense blob in the middle of the cube, written to the trainer's model: (grid, mean).
fn blob_grid(t: &Trainer) -> (Vec<f32>, f32) {
    let res = t.config.train.occupancy_resolution;
    let mut rng = SplitMix64(5);
    let grid: Vec<f32> = (0..res * res * res)
        .map(|c| {
            let (x, y, z) = (c % res, (c / res) % res, c / (res * res));
            if [x, y, z].iter().all(|&v| v > res / 4 && v < 3 * res / 4) {
                5.0 + rng.next_f32()
            } else {
                0.01 * rng.next_f32()
            }
        })
        .collect();
    let mean = grid.iter().sum::<f32>() / grid.len() as f32;
    t.gpu.write(&t.model.occupancy, &grid);
    t.gpu.write(&t.model.occupancy_mean, &[mean]);
    (grid, mean)
}

/// field_forward, render_forward, loss_mse (with injected opacity and depth gradients) and
/// render_backward, each on the device's own inputs; then loss_stats and the statistics read-back.
#[test]
fn forward_losses_and_render_backward_match_reference() {
    let mut f = Fixture::new(common::gpu(), config(), 3);
    let t = &f.trainer;
    let params = to_f64(&f.randomize_params(5));
    f.forward();
    let (batch, rays, samples, field) = (f.batch(), f.rays(), f.samples(), f.field_out());
    let max_density = f64::from(t.config.field.max_density);
    // the plan's count of rays with a target (the loss's mean divides by it) is the rays' own
    let with_target = rays.iter().filter(|r| r.target_rgb[3] == 1.0).count() as u32;
    assert_eq!(with_target, f.plan.valid_rays);

    // field_forward, at the active samples (the kernel writes no others)
    let cpu_field = cpu::field_forward(&t.layout, &params, &t.octree, &samples, &rays, max_density);
    let mut checked = 0;
    for s in active(&samples) {
        for k in 0..4 {
            let (g, c) = (field[s][k], cpu_field[s][k]);
            assert!((g - c).abs() <= 2e-5 * (1.0 + c.abs()), "sample {s} output {k}: {g} vs {c}");
        }
        checked += 1;
    }
    assert!(checked > 8000, "{checked} active samples");
    assert!(cpu_field.iter().any(|f| f[3] > 5.0), "some samples should be dense");

    // render_forward from the device's field: rgb over the background, opacity, depth, evaluated,
    // and the node of largest weight wherever the two largest are not near a tie
    let cpu_out = cpu::render_forward(&batch, &rays, &samples, &field);
    let outputs = f.outputs();
    assert!(rays.iter().any(|r| cpu::background(&batch, r) != [1.0; 3]), "training rays get random backgrounds");
    let mut nodes = 0;
    for (slot, (g, c)) in outputs.iter().zip(&cpu_out).enumerate() {
        assert_eq!(g.evaluated, c.evaluated, "slot {slot}");
        let close = (0..3).all(|k| (g.rgb[k] - c.rgb[k]).abs() <= 2e-5)
            && (g.opacity - c.opacity).abs() <= 2e-5
            && (g.depth - c.depth).abs() <= 2e-5 * (1.0 + c.depth.abs());
        assert!(close, "slot {slot}: {g:?} vs {c:?}");
        if c.node_margin > 1e-4 {
            assert_eq!(g.node, c.node, "node of slot {slot}: {g:?} vs {c:?}");
            nodes += usize::from(c.node >= 0);
        }
    }
    let lit = cpu_out.iter().filter(|o| o.evaluated > 0).count();
    assert!(2 * nodes > lit, "the nodes of {nodes} of {lit} slots checked");
    let opacity = |pick: fn(f64, f64) -> f64| cpu_out.iter().map(|o| o.opacity).reduce(pick).unwrap();
    assert!(opacity(f64::max) - opacity(f64::min) > 0.3, "opacities should vary");

    // loss_mse alone (record_losses clears the gradients first), then added to injected gradients
    let slots = f.slots() as u32;
    f.run(|t, rec| t.record_losses(rec, &t.train, slots));
    let loss = f.loss();
    let (cpu_grads, cpu_losses) = cpu::loss_mse(&batch, &loss, &rays, &outputs);
    let losses = to_f64(&f.read::<f32>(&t.train.losses, f.slots() * LOSS_TERMS));
    let grad_scale = cpu_grads.iter().flat_map(|g| g.rgb).fold(0.0f64, |m, v| m.max(v.abs()));
    for (slot, (g, c)) in f.ray_grads().iter().zip(&cpu_grads).enumerate() {
        assert!((0..3).all(|k| (g.rgb[k] - c.rgb[k]).abs() <= 1e-5 * grad_scale), "slot {slot}: {g:?} vs {c:?}");
        assert_eq!((g.opacity, g.depth), (0.0, 0.0));
        assert!((losses[slot] - cpu_losses[slot]).abs() <= 1e-5 * cpu_losses[slot].max(1e-6), "loss of slot {slot}");
    }
    let w = &f.plan.cut_weights;
    assert!(w[0] != w[1], "the cuts' weights differ: {w:?}");
    let injected = f.losses_with_injected(17);
    let expected: Vec<OutputGrad> = injected
        .iter()
        .zip(&cpu_grads)
        .map(|(i, m)| OutputGrad { rgb: [0, 1, 2].map(|k| i.rgb[k] + m.rgb[k]), ..*i })
        .collect();
    let ray_grads = f.ray_grads();
    for (slot, (g, c)) in ray_grads.iter().zip(&expected).enumerate() {
        let close = (0..3).all(|k| (g.rgb[k] - c.rgb[k]).abs() <= 1e-5 * grad_scale)
            && (g.opacity - c.opacity).abs() <= 1e-9
            && (g.depth - c.depth).abs() <= 1e-9;
        assert!(close, "slot {slot}: {g:?} vs {c:?}");
    }

    // render_backward from the device's field, outputs and slot gradients
    f.run(|t, rec| rec.dispatch(&t.kernels.render_backward, &t.train.groups.render_backward, slots));
    let cpu_sample_grads = cpu::render_backward(&batch, &samples, &field, &outputs, &ray_grads);
    let sample_grads = f.sample_grads();
    // one scale for the colour gradients, one for the density gradients
    let scale = |k: usize| cpu_sample_grads.iter().fold(0.0f64, |m, g| m.max(g[k].abs()));
    let scales = [scale(0).max(scale(1)).max(scale(2)), scale(3)];
    assert!(scales[0] > 0.0 && scales[1] > 0.0);
    for s in 0..samples.len() {
        for k in 0..4 {
            let (g, c) = (sample_grads[s][k], cpu_sample_grads[s][k]);
            let tolerance = 2e-5 * scales[usize::from(k == 3)];
            assert!((g - c).abs() <= tolerance, "sample {s} gradient {k}: {g:e} vs {c:e}");
        }
    }
    // the opacity and depth gradients matter: without them the density gradients differ
    let mse_only = cpu::render_backward(&batch, &samples, &field, &outputs, &cpu_grads);
    let changed = (0..samples.len()).filter(|&s| (mse_only[s][3] - sample_grads[s][3]).abs() > 0.1 * scales[1]);
    assert!(changed.count() > 100, "the injected gradients should change the density gradients");

    // loss_stats, twice: the statistics add up; read_stats averages and clears them
    for _ in 0..2 {
        f.run(|t, rec| rec.dispatch_groups(&t.kernels.loss_stats, &t.train.groups.loss_stats, 1, 1));
    }
    let stats = to_f64(&f.read::<f32>(&t.model.stats, STATS_WORDS));
    let loss = f.loss();
    let once = cpu::loss_stats(&batch, &loss, &outputs, &losses, &[0.0; STATS_WORDS]);
    let twice = cpu::loss_stats(&batch, &loss, &outputs, &losses, &once);
    for (k, (g, c)) in stats.iter().zip(&twice).enumerate() {
        assert!((g - c).abs() <= 1e-5 * c.abs(), "statistics word {k}: {g} vs {c}");
    }
    assert!(twice[3] > 0.0 && twice[4] > 0.0 && twice[5] == 0.0, "two cuts: {twice:?}");
    let weighted = (0..2).map(|c| f64::from(loss.lambdas[0][0] * loss.cut_weights[c]) * once[3 + c]).sum::<f64>();
    assert!((once[2] - weighted).abs() <= 1e-6 * weighted, "weighted total {} vs {weighted}", once[2]);
    let read = f.trainer.read_stats().unwrap();
    assert_eq!(read.steps, 2);
    let evaluated = active(&samples).count() as f64;
    assert!((read.active_samples - evaluated).abs() <= 1e-6 * evaluated, "{} vs {evaluated}", read.active_samples);
    for c in 0..2 {
        let mean = once[3 + c];
        assert!((read.terms[0].1[c] - mean).abs() <= 1e-5 * mean, "cut {c}: {:?} vs {mean}", read.terms[0].1);
    }
    assert_eq!(read.mse, read.terms[0].1[0]);
    assert!((read.total - once[2]).abs() <= 1e-5 * once[2], "total {} vs {}", read.total, once[2]);
    assert_eq!(read.sanitized_total(), 0, "{:?}", read.sanitized);
    let cleared = to_f64(&f.read::<f32>(&f.trainer.model.stats, STATS_WORDS));
    assert!(cleared.iter().all(|&v| v == 0.0));
}

/// field_forward and field_backward against the reference, on the device's own per-sample gradients
/// (which carry colour, opacity and depth terms), tensor by tensor. Returns the parameters.
fn field_backward_matches(f: &Fixture) -> Vec<f64> {
    field_backward_within(f, 2e-5, 1e-4)
}

/// field_backward_matches with the outputs within `out_rel` (relative to 1 + |value|) and the
/// gradients within `rel` of each tensor's scale.
fn field_backward_within(f: &Fixture, out_rel: f64, rel: f64) -> Vec<f64> {
    let t = &f.trainer;
    let params = f.as_read(&f.randomize_params(9));
    f.forward();
    f.losses_with_injected(23);
    f.backward();
    let (rays, samples) = (f.rays(), f.samples());
    let max_density = f64::from(t.config.field.max_density);
    let cpu_field = cpu::field_forward(&t.layout, &params, &t.octree, &samples, &rays, max_density);
    let field = f.field_out();
    for s in active(&samples) {
        for k in 0..4 {
            let (g, c) = (field[s][k], cpu_field[s][k]);
            assert!((g - c).abs() <= out_rel * (1.0 + c.abs()), "sample {s} output {k}: {g} vs {c}");
        }
    }
    let worst_out = active(&samples)
        .flat_map(|s| (0..4).map(move |k| (s, k)))
        .map(|(s, k)| (field[s][k] - cpu_field[s][k]).abs() / (1.0 + cpu_field[s][k].abs()))
        .fold(0.0f64, f64::max);
    eprintln!("field_forward: worst difference {worst_out:.1e} of 1 + |value|");
    let cpu_grads = cpu::field_backward(&t.layout, &params, &t.octree, &samples, &rays, &f.sample_grads(), max_density);
    let gpu_grads = f.grads();
    let (tensors, worst) = cpu::assert_close_per_tensor("field_backward", &t.layout, &gpu_grads, &cpu_grads, rel);
    // a step in one chunk flags nothing (Adam finds the entries from the samples); in chunks, every
    // block with a gradient is flagged for Adam, and few blocks without one are
    let touched: Vec<u32> = (0..t.model.paging.n_pages)
        .flat_map(|p| f.read::<u32>(&t.model.touched[p as usize], t.model.paging.blocks(p) as usize))
        .collect();
    if t.shape.flag_blocks {
        let pages_start: Vec<usize> = (0..t.model.paging.n_pages)
            .map(|p| (t.model.paging.nodes(p).start * t.layout.node_params) as usize)
            .collect();
        let block_of = |i: usize| {
            let page = pages_start.iter().rposition(|&s| s <= i).expect("a page");
            let first_block: usize = (0..page).map(|p| t.model.paging.blocks(p as u32) as usize).sum();
            first_block + (i - pages_start[page]) / ADAM_BLOCK as usize
        };
        let mut with_grad = BTreeSet::new();
        for (i, g) in gpu_grads.iter().enumerate() {
            if *g != 0.0 {
                assert_eq!(touched[block_of(i)], 1, "parameter {i} has a gradient but its block is not flagged");
                with_grad.insert(block_of(i));
            }
        }
        let flagged = touched.iter().filter(|&&v| v == 1).count();
        let allowed = with_grad.len() + with_grad.len() / 10 + 64;
        assert!(flagged <= allowed, "{flagged} blocks flagged, {} with gradient", with_grad.len());
    } else {
        assert!(touched.iter().all(|&v| v == 0), "a step in one chunk flags no block");
    }
    let used: BTreeSet<u32> = active(&samples).map(|s| samples[s].node).collect();
    assert_eq!(tensors, used.len() * cpu::tensors(&t.layout).len(), "every tensor of every used node");
    assert!(used.len() > 20, "{} nodes used", used.len());
    eprintln!("field_backward: {tensors} tensors, worst difference {worst:.1e} of the tensor's scale");
    params
}

#[test]
fn field_backward_matches_reference() {
    let gpu = common::gpu();
    // lavapipe has float atomics: this is the native path there
    assert!(gpu.float_atomics, "the adapter has no float atomics: this test would repeat the CAS one");
    field_backward_matches(&Fixture::new(gpu, config(), 4));
}

#[test]
fn field_backward_cas_fallback_matches_reference() {
    // decoders wider than a field workgroup: a CPU adapter's written-out weight-gradient sums then
    // take each layer's inputs in several rounds
    let mut config = paged_config();
    config.field.hidden_width = 40;
    let f = Fixture::new(common::gpu_cas(), config, 4);
    assert!(!f.trainer.shape.float_atomics && !f.trainer.gpu.float_atomics);
    assert!(f.trainer.shape.field_workgroup < f.trainer.layout.hidden, "one round per layer");
    field_backward_matches(&f);
}

/// Adam's uniforms at `step` with distinct learning rates for the hash tables and the decoders.
fn adam_uniforms(step: u32) -> AdamUniforms {
    let (beta1, beta2) = (0.9f32, 0.99f32);
    let k = f64::from(step + 1);
    AdamUniforms {
        lr_hash: 1e-2,
        lr_mlp: 3e-3,
        beta1,
        beta2,
        eps: 1e-15,
        bias1: (1.0 - f64::from(beta1).powf(k)) as f32,
        bias2: (1.0 - f64::from(beta2).powf(k)) as f32,
        l2: 0.0,
    }
}

/// Runs Adam on the device with `grads` and checks params, moments and cleared gradients against the
/// reference (updated in place).
fn adam_step(f: &Fixture, u: &AdamUniforms, state: &mut [Vec<f32>; 3], grads: &[f32]) {
    let t = &f.trainer;
    t.gpu.write(&t.model.adam, &[*u]);
    f.write_paged(&t.model.grads, grads);
    t.model.touch_all(&t.gpu);
    f.run(|t, rec| t.record_adam_blocks(rec));
    let [params, m1, m2] = state;
    let dropped = cpu::adam(u, &t.layout, params, m1, m2, grads);
    assert_eq!(dropped, 0);
    let gpu = [t.read_params().unwrap(), f.read_paged(&t.model.m1), f.read_paged(&t.model.m2)];
    for (name, (g, c)) in ["param", "m1", "m2"].iter().zip(gpu.iter().zip(state.iter())) {
        for i in 0..g.len() {
            assert!((g[i] - c[i]).abs() <= 2e-6 * (1e-3 + c[i].abs()), "{name} {i}: {} vs {}", g[i], c[i]);
        }
    }
    assert!(f.read_paged(&t.model.grads).iter().all(|&g| g == 0.0), "Adam clears the gradients");
}

/// Adam over three pages with different learning rates for hash and decoder entries, entries without
/// gradient (moments and parameters kept) and long runs without gradient, over several steps.
#[test]
fn adam_matches_reference_with_separate_learning_rates() {
    let f = Fixture::new(common::gpu(), paged_config(), 5);
    let t = &f.trainer;
    assert!(t.model.paging.n_pages >= 3);
    let l = &t.layout;
    let n = t.n_params() as usize;
    let block = l.node_params as usize;
    let mut rng = SplitMix64(11);
    let params: Vec<f32> = (0..n).map(|_| rng.next_f32() - 0.5).collect();
    let m1: Vec<f32> = (0..n).map(|_| rng.next_f32() * 0.1 - 0.05).collect();
    let m2: Vec<f32> = (0..n).map(|_| rng.next_f32() * 0.01).collect();
    t.write_params(&params).unwrap();
    f.write_paged(&t.model.m1, &m1);
    f.write_paged(&t.model.m2, &m2);
    let mut state = [params, m1, m2];

    // a third of the entries without gradient; runs without any: across the hash/decoder boundary of
    // node 1, a whole node, the kernel's runs, and across the boundary between pages 0 and 1
    let page_end = t.model.paging.nodes(0).end as usize * block;
    let run = ADAM_BLOCK as usize;
    let runs = [
        block + l.hash_params as usize - 300..block + l.hash_params as usize + 77,
        5 * block..6 * block,
        // one whole run of the kernel's invocations, and one that straddles two
        1000 * run..1001 * run,
        2000 * run + 3..2001 * run + 3,
    ];
    let no_grad = |i: usize| {
        i.is_multiple_of(3) || runs.iter().any(|r| r.contains(&i)) || (page_end - 1000..page_end + 1001).contains(&i)
    };
    for step in 0..3 {
        let u = adam_uniforms(step + 2);
        let grads: Vec<f32> = (0..n).map(|i| if no_grad(i) { 0.0 } else { (rng.next_f32() - 0.5) * 0.1 }).collect();
        let before = state.clone();
        adam_step(&f, &u, &mut state, &grads);
        for i in (0..n).filter(|&i| no_grad(i)) {
            assert!(before.iter().zip(&state).all(|(b, a)| b[i] == a[i]), "entry {i} without gradient changed");
        }
    }
    // the learning rates are told apart: with them swapped the reference would not match
    let u = adam_uniforms(30);
    let grads: Vec<f32> = (0..n).map(|i| if no_grad(i) { 0.0 } else { (rng.next_f32() - 0.5) * 0.1 }).collect();
    let mut swapped = state.clone();
    let swapped_u = AdamUniforms { lr_hash: u.lr_mlp, lr_mlp: u.lr_hash, ..u };
    let [p, a, b] = &mut swapped;
    cpu::adam(&swapped_u, l, p, a, b, &grads);
    adam_step(&f, &u, &mut state, &grads);
    let far = (0..n).filter(|&i| (swapped[0][i] - state[0][i]).abs() > 1e-4).count();
    assert!(far > n / 2, "swapped learning rates change {far} of {n} parameters");

    // a step without any gradient changes nothing
    let before = state.clone();
    adam_step(&f, &u, &mut state, &vec![0.0; n]);
    assert_eq!(before, state);
}

/// The occupancy update of every phase, and the grid's mean, against the reference.
fn occupancy_matches(f: &Fixture, params: &[f64]) {
    let t = &f.trainer;
    let res = t.config.train.occupancy_resolution;
    let cells = (res * res * res) as usize;
    let mut grid: Vec<f32> = (0..cells).map(|i| (i % 7) as f32).collect();
    t.gpu.write(&t.model.occupancy, &grid);
    for phase in [3, 0, 1, 2] {
        let sampling = Sampling { phase, decay: 0.5, seed: 77 + phase, ..f.sampling() };
        t.gpu.write(&t.model.sampling, &[sampling]);
        f.run(|t, rec| t.record_occupancy(rec, phase));
        let gpu_grid: Vec<f32> = f.read(&t.model.occupancy, cells);
        let max_density = f64::from(t.config.field.max_density);
        let cpu_grid = cpu::occupancy_update(&sampling, &t.layout, params, &t.octree, &grid, max_density);
        for (cell, (g, c)) in gpu_grid.iter().zip(&cpu_grid).enumerate() {
            assert!((f64::from(*g) - c).abs() <= 1e-4 * (1.0 + c.abs()), "phase {phase} cell {cell}: {g} vs {c}");
        }
        let updated = (0..cells).filter(|&c| c as u32 % OCC_PHASES == phase && cpu_grid[c] > f64::from(grid[c]) * 0.5);
        assert!(updated.count() > 100, "some cells take the new density");
        let mean: Vec<f32> = f.read(&t.model.occupancy_mean, 1);
        let cpu_mean = cpu::occupancy_mean(&to_f64(&gpu_grid));
        assert!((f64::from(mean[0]) - cpu_mean).abs() <= 1e-5 * cpu_mean, "mean {} vs {cpu_mean}", mean[0]);
        grid = gpu_grid;
    }
    // the update visits the cells of every page's nodes
    let pages: BTreeSet<u32> = (0..cells as u32)
        .map(|c| {
            let p = [c % res, (c / res) % res, c / (res * res)].map(|v| (v as f32 + 0.5) * 2.0 / res as f32 - 1.0);
            t.model.paging.page_of(t.octree.level_node(p, 0.0, u32::MAX))
        })
        .collect();
    assert_eq!(pages.len() as u32, t.model.paging.n_pages);
}

#[test]
fn occupancy_update_matches_reference() {
    for config in [config(), paged_config()] {
        let f = Fixture::new(common::gpu(), config, 6);
        let params = to_f64(&f.randomize_params(13));
        occupancy_matches(&f, &params);
    }
}

/// The field passes with the decoder weights read in place from the parameters (the path GPUs take)
/// rather than from workgroup memory (lavapipe's): run in a child process with INFNERF_WEIGHTS set,
/// so no test changes the environment of the others.
#[test]
fn field_passes_with_weights_in_storage_match_reference() {
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "weights_in_storage", "--ignored", "--test-threads", "1"])
        .env("INFNERF_WEIGHTS", "storage")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout) + String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success() && text.contains("1 passed"), "the child test failed:\n{text}");
}

#[test]
#[ignore = "run by field_passes_with_weights_in_storage_match_reference, which sets INFNERF_WEIGHTS"]
fn weights_in_storage() {
    assert_eq!(std::env::var("INFNERF_WEIGHTS").as_deref(), Ok("storage"), "run without INFNERF_WEIGHTS=storage");
    let f = Fixture::new(common::gpu(), paged_config(), 15);
    assert_eq!(f.trainer.shape.weights, WeightSource::Storage);
    let params = field_backward_matches(&f);
    occupancy_matches(&f, &params);
}

/// A field dispatch is x by y workgroups with x at most 65535, so it may run past the page's last
/// workgroup (node_scan.wgsl); those workgroups must take no samples. Here every page's dispatch is
/// made twice as tall as it needs: the outputs and gradients must not change.
#[test]
fn field_passes_ignore_workgroups_past_the_page() {
    let f = Fixture::new(common::gpu(), paged_config(), 18);
    let t = &f.trainer;
    let params = to_f64(&f.randomize_params(43));
    let n_samples = f.n_samples() as u32;
    f.run(|t, rec| {
        rec.dispatch(&t.kernels.rays, &t.train.groups.rays, f.rays);
        t.record_samples(rec, &t.train, &t.kernels.samples, &t.train.groups.samples, n_samples);
    });
    let pages = t.model.paging.n_pages as usize;
    let args: Vec<u32> = f.read(&t.train.dispatch_args, 3 * pages);
    let tall: Vec<u32> = args.chunks(3).flat_map(|a| [a[0] * a[1], 2 * u32::from(a[0] > 0), 1]).collect();
    assert!(tall.chunks(3).filter(|a| a[0] > 0).count() >= 3);
    t.gpu.write(&t.train.dispatch_args, &tall);
    let slots = f.slots() as u32;
    f.run(|t, rec| {
        for (page, group) in t.train.groups.field_forward.iter().enumerate() {
            rec.dispatch_indirect(&t.kernels.field_forward, group, &t.train.dispatch_args, page as u64 * 12);
        }
        rec.dispatch(&t.kernels.render_forward, &t.train.groups.render_forward, slots);
        t.record_losses(rec, &t.train, slots);
        t.record_backward(rec, &t.train, slots);
    });
    let (rays, samples, field) = (f.rays(), f.samples(), f.field_out());
    let max_density = f64::from(t.config.field.max_density);
    let cpu_field = cpu::field_forward(&t.layout, &params, &t.octree, &samples, &rays, max_density);
    for s in active(&samples) {
        for k in 0..4 {
            let (g, c) = (field[s][k], cpu_field[s][k]);
            assert!((g - c).abs() <= 2e-5 * (1.0 + c.abs()), "sample {s} output {k}: {g} vs {c}");
        }
    }
    let cpu_grads = cpu::field_backward(&t.layout, &params, &t.octree, &samples, &rays, &f.sample_grads(), max_density);
    cpu::assert_close_per_tensor("field_backward", &t.layout, &f.grads(), &cpu_grads, 1e-4);
}

/// The occupancy update of a (phase, page) dispatched as more workgroups than it has groups of cells
/// (as dispatch_size makes it past 65535): the extra workgroups update nothing.
#[test]
fn occupancy_ignores_workgroups_past_its_groups() {
    let f = Fixture::new(common::gpu(), paged_config(), 19);
    let t = &f.trainer;
    let params = to_f64(&f.randomize_params(47));
    let res = t.config.train.occupancy_resolution;
    let cells = (res * res * res) as usize;
    let grid: Vec<f32> = (0..cells).map(|i| (i % 5) as f32 * 0.01).collect();
    t.gpu.write(&t.model.occupancy, &grid);
    let phase = 2;
    let sampling = Sampling { phase, decay: 0.5, ..f.sampling() };
    t.gpu.write(&t.model.sampling, &[sampling]);
    let pages = t.model.paging.n_pages;
    f.run(|t, rec| {
        for (page, group) in t.model.occupancy_groups.iter().enumerate() {
            let groups = t.model.occ_group_counts[(phase * pages) as usize + page];
            rec.dispatch_groups(&t.kernels.occupancy, group, groups, 3);
        }
    });
    let gpu_grid: Vec<f32> = f.read(&t.model.occupancy, cells);
    let max_density = f64::from(t.config.field.max_density);
    let cpu_grid = cpu::occupancy_update(&sampling, &t.layout, &params, &t.octree, &grid, max_density);
    for (cell, (g, c)) in gpu_grid.iter().zip(&cpu_grid).enumerate() {
        assert!((f64::from(*g) - c).abs() <= 1e-4 * (1.0 + c.abs()), "cell {cell} (phase {}): {g} vs {c}", cell % 4);
    }
}

/// The same field forward, backward and Adam on three pages and on one: the same results, and the
/// reference's.
#[test]
fn paging_gives_the_results_of_one_page() {
    let single = Fixture::new(common::gpu(), config(), 8);
    let paged = Fixture::new(common::gpu(), paged_config(), 8);
    assert_eq!(single.trainer.model.paging.n_pages, 1);
    assert!(paged.trainer.model.paging.n_pages >= 3, "{:?}", paged.trainer.model.paging);
    let t = &single.trainer;
    let max_density = f64::from(t.config.field.max_density);
    let u = adam_uniforms(4);
    let mut results = Vec::new();
    for f in [&single, &paged] {
        let params = f.randomize_params(19);
        f.forward();
        f.losses_with_injected(29);
        f.backward();
        let (rays, samples, grads) = (f.rays(), f.samples(), f.grads());
        let cpu_grads = cpu::field_backward(
            &t.layout,
            &to_f64(&params),
            &t.octree,
            &samples,
            &rays,
            &f.sample_grads(),
            max_density,
        );
        let pages = f.trainer.model.paging.n_pages;
        cpu::assert_close_per_tensor(&format!("{pages} pages"), &t.layout, &grads, &cpu_grads, 1e-4);

        // Adam from zero moments on these gradients: node by node, some nodes dense (their tables
        // swept) and some sparse (their samples' corners claimed)
        let l = &t.layout;
        let counts: Vec<u32> = f.read(&f.trainer.train.node_counts, t.octree.nodes.len());
        let dense = counts.iter().filter(|&&c| c >= l.dense_samples()).count();
        let sparse = counts.iter().filter(|&&c| c > 0 && c < l.dense_samples()).count();
        assert!(dense > 0 && sparse > 0, "{dense} dense and {sparse} sparse nodes");
        f.trainer.gpu.write(&f.trainer.model.adam, &[u]);
        f.run(|t, rec| t.record_adam(rec, &t.train));
        let n = params.len();
        let mut state = [params.clone(), vec![0.0; n], vec![0.0; n]];
        let grads32: Vec<f32> = grads.iter().map(|&g| g as f32).collect();
        let [p, m1, m2] = &mut state;
        cpu::adam(&u, &t.layout, p, m1, m2, &grads32);
        let gpu_state =
            [f.trainer.read_params().unwrap(), f.read_paged(&f.trainer.model.m1), f.read_paged(&f.trainer.model.m2)];
        for (k, (g, c)) in gpu_state.iter().zip(&state).enumerate() {
            for i in 0..n {
                assert!((g[i] - c[i]).abs() <= 2e-6 * (1e-3 + c[i].abs()), "{pages} pages, Adam state {k} entry {i}");
            }
        }
        results.push((samples, f.field_out(), f.outputs(), grads));
    }
    let (one, three) = (&results[0], &results[1]);
    assert!(one.0.iter().zip(&three.0).all(|(a, b)| a.node == b.node && a.t == b.t), "the same samples");
    for s in active(&one.0) {
        assert_eq!(one.1[s], three.1[s], "field output of sample {s}");
    }
    assert_eq!(one.2, three.2, "the renders");
    // atomics add in any order: the gradients agree to rounding
    let (tensors, _) = cpu::assert_close_per_tensor("three pages against one", &t.layout, &three.3, &one.3, 1e-5);
    assert!(tensors > 100);
}

/// A step at two cuts gives the sum of the two single-cut steps' gradients, each at its cut's weight.
#[test]
fn two_cuts_give_the_weighted_sum_of_single_cut_gradients() {
    let mut f = Fixture::new(common::gpu(), config(), 10);
    f.randomize_params(31);
    let weights = f.plan.cut_weights.clone();
    let step = |f: &Fixture| {
        f.forward();
        let slots = f.slots() as u32;
        f.run(|t, rec| t.record_losses(rec, &t.train, slots));
        f.backward();
        f.grads()
    };
    let both = step(&f);
    let mut single = Vec::new();
    for (c, cut) in [2u32, 1].into_iter().enumerate() {
        f.plan.cuts = vec![cut];
        f.plan.cut_weights = vec![weights[c]];
        f.upload();
        single.push(step(&f));
    }
    let sum: Vec<f64> = single[0].iter().zip(&single[1]).map(|(a, b)| a + b).collect();
    let layout = &f.trainer.layout;
    let (tensors, _) = cpu::assert_close_per_tensor("two cuts against the sum of one each", layout, &both, &sum, 1e-5);
    assert!(tensors > 100);
    // both cuts contribute: the sum differs from either alone
    for one in &single {
        let differs = both.iter().zip(one).filter(|(a, b)| (*a - *b).abs() > 1e-3 * a.abs().max(1e-9)).count();
        assert!(differs > 1000, "{differs} gradients differ from a single cut's");
    }
}

/// Trainer::render (the view workspace, rays in chunks from ray_offset, no jitter, the plain
/// background) against the reference chain rays -> samples -> field -> render.
#[test]
fn render_matches_reference_chain() {
    let f = Fixture::new(common::gpu(), config(), 12);
    let t = &f.trainer;
    let params = to_f64(&f.randomize_params(37));
    let mut camera = random_dataset(4, 24, 12).test[0].camera;
    // the principal point at the image's edge: the cube lies off to one side, some rays miss it
    camera.cx = camera.width as f32;
    let pixels = camera.width * camera.height;
    assert!(pixels > t.view.size.rays, "the view takes several chunks");
    for cut in [2, 0] {
        let rendered = t.render(&camera, cut).unwrap();
        let mut cuts = [0; MAX_CUTS];
        cuts[0] = cut;
        let batch = Batch {
            n_rays: pixels,
            samples_per_ray: t.config.train.samples_per_ray,
            n_cuts: 1,
            seed: 0,
            training: 0,
            patch_size: 1,
            ray_offset: 0,
            view: 0,
            cuts,
            background: t.config.data.background,
            random_background: 0,
            group_tiles: 1,
            grouped_patches: 0,
            probe_groups: 0,
            probe_kinds: 0,
        };
        let rays = cpu::rays(&batch, &[GpuCamera::from(&camera)], &[], &[]);
        let sampling = t.sampling_uniforms(t.step, false);
        assert_eq!(sampling.skip, 0);
        let samples = cpu::samples(&batch, &sampling, &rays, &t.octree, &[], 0.0);
        let max_density = f64::from(t.config.field.max_density);
        let field = cpu::field_forward(&t.layout, &params, &t.octree, &samples, &rays, max_density);
        let out = cpu::render_forward(&batch, &rays, &samples, &field);
        let (mut far, mut nodes) = (0, 0);
        for (p, o) in out.iter().enumerate() {
            let g = [0, 1, 2].map(|k| f64::from(rendered.rgb.rgb[3 * p + k]));
            let node_close = o.node_margin <= 1e-4 || rendered.node[p] as i64 == o.node;
            let close = (0..3).all(|k| (g[k] - o.rgb[k]).abs() <= 1e-4)
                && (f64::from(rendered.opacity[p]) - o.opacity).abs() <= 1e-4
                && (f64::from(rendered.depth[p]) - o.depth).abs() <= 1e-4 * (1.0 + o.depth)
                && node_close;
            far += usize::from(!close);
            nodes += usize::from(o.node_margin > 1e-4 && o.node >= 0);
        }
        // a sample exactly at a level boundary may take another node on the device (not at cut 0)
        let allowed = if cut == 0 { 0 } else { out.len() / 200 };
        assert!(far <= allowed, "cut {cut}: {far} of {} pixels differ", out.len());
        let lit = out.iter().filter(|o| o.evaluated > 0).count();
        assert!(2 * nodes > lit, "cut {cut}: the nodes of {nodes} of {lit} pixels checked");
        // pixels whose ray misses the cube have no node
        let missed: Vec<usize> = (0..out.len()).filter(|&p| out[p].evaluated == 0).collect();
        assert!(!missed.is_empty() && missed.iter().all(|&p| rendered.node[p] == -1.0), "cut {cut}");
    }
}

/// Non-finite values are replaced by 0 and counted, per kind of pass, in read_stats().sanitized.
#[test]
fn non_finite_values_are_zeroed_and_counted() {
    let mut f = Fixture::new(common::gpu(), config(), 14);
    let t = &f.trainer;
    let mut params = f.randomize_params(41);
    f.forward();
    let samples = f.samples();
    // two busy nodes get a NaN bias: a leaf (it holds occupancy cells) in the density decoder's output
    // (sigma is NaN), another node in the colour decoder's (red is NaN)
    let counts = cpu::node_counts(&samples, t.octree.nodes.len());
    let mut busiest: Vec<usize> = (0..counts.len()).collect();
    busiest.sort_by_key(|&n| std::cmp::Reverse(counts[n]));
    let density_node = *busiest.iter().find(|&&n| t.octree.nodes[n].depth == 2).unwrap();
    let colour_node = *busiest.iter().find(|&&n| n != density_node).unwrap();
    let l = &t.layout;
    let block = l.node_params as usize;
    let finite = params.clone();
    params[density_node * block + l.off_b2 as usize] = f32::NAN;
    params[colour_node * block + l.off_b4 as usize] = f32::NAN;
    t.write_params(&params).unwrap();
    f.forward();
    let field = f.field_out();
    let of_node = |node: usize| active(&samples).filter(|&s| samples[s].node as usize == node).collect::<Vec<_>>();
    assert!(of_node(density_node).into_iter().all(|s| field[s][3] == 0.0), "NaN densities become 0");
    assert!(of_node(colour_node).into_iter().all(|s| field[s][0] == 0.0), "NaN colours become 0");
    assert!(active(&samples).all(|s| field[s].iter().all(|v| v.is_finite())));
    let field_bad = (of_node(density_node).len() + of_node(colour_node).len()) as u32;

    // a NaN colour gradient and an infinite depth gradient in two slots: their samples' density
    // gradients (and the NaN channel) become 0
    let slots = f.slots() as u32;
    f.run(|t, rec| t.record_losses(rec, &t.train, slots));
    let mut ray_grads: Vec<RayGrad> = f.read(&t.train.ray_grads, f.slots());
    let spr = t.config.train.samples_per_ray as usize;
    let outputs = f.outputs();
    let lit: Vec<usize> = (0..f.slots()).filter(|&s| outputs[s].evaluated > 4).collect();
    let (nan_slot, inf_slot) = (lit[lit.len() / 3], lit[2 * lit.len() / 3]);
    ray_grads[nan_slot].rgb[1] = f32::NAN;
    ray_grads[inf_slot].depth = f32::INFINITY;
    t.gpu.write(&t.train.ray_grads, &ray_grads);
    f.run(|t, rec| rec.dispatch(&t.kernels.render_backward, &t.train.groups.render_backward, slots));
    let sample_grads = f.sample_grads();
    assert!(sample_grads.iter().flatten().all(|v| v.is_finite()));
    let field32: Vec<[f32; 4]> = f.read(&t.train.field_out, f.n_samples());
    let gpu_samples = f.samples();
    let mut render_bad = 0;
    for s in nan_slot * spr..(nan_slot + 1) * spr {
        assert!(sample_grads[s][1] == 0.0 && sample_grads[s][3] == 0.0, "sample {s}");
        render_bad += u32::from(gpu_samples[s].node != cpu::NO_NODE);
    }
    for s in inf_slot * spr..(inf_slot + 1) * spr {
        assert!(sample_grads[s][3] == 0.0, "sample {s}");
        // where sigma * delta is clamped the density gradient is 0 before it could be infinite
        let tau = field32[s][3] * gpu_samples[s].delta;
        render_bad += u32::from(gpu_samples[s].node != cpu::NO_NODE && tau < cpu::MAX_TAU as f32);
    }

    // the occupancy update reads the NaN density at every cell of that node in the phase
    let res = t.config.train.occupancy_resolution;
    let cells = res * res * res;
    let phase = 1;
    t.gpu.write(&t.model.sampling, &[Sampling { phase, ..f.sampling() }]);
    f.run(|t, rec| t.record_occupancy(rec, phase));
    let grid: Vec<f32> = f.read(&t.model.occupancy, cells as usize);
    assert!(grid.iter().all(|v| v.is_finite()));
    let node_of_cell = |c: u32| {
        let p = [c % res, (c / res) % res, c / (res * res)].map(|v| (v as f32 + 0.5) * 2.0 / res as f32 - 1.0);
        t.octree.level_node(p, 0.0, u32::MAX) as usize
    };
    let in_node: Vec<u32> =
        (0..cells).filter(|&c| c % OCC_PHASES == phase && node_of_cell(c) == density_node).collect();
    assert!(in_node.iter().all(|&c| grid[c as usize] == 0.0), "NaN densities enter the grid as 0");
    let occupancy_bad = in_node.len() as u32;

    // Adam drops a NaN and an infinite gradient: their parameters and moments stay as they were
    t.write_params(&finite).unwrap();
    let n = t.n_params() as usize;
    let mut grads = vec![0.0f32; n];
    let (nan_entry, inf_entry, good) = (3 * block + 5, n - 2, n - 1);
    grads[nan_entry] = f32::NAN;
    grads[inf_entry] = f32::NEG_INFINITY;
    grads[good] = 0.5;
    f.write_paged(&t.model.grads, &grads);
    t.model.touch_all(&t.gpu);
    t.gpu.write(&t.model.adam, &[adam_uniforms(0)]);
    f.run(|t, rec| t.record_adam_blocks(rec));
    let after = t.read_params().unwrap();
    let (m1, m2) = (f.read_paged(&t.model.m1), f.read_paged(&t.model.m2));
    assert!(after.iter().chain(&m1).chain(&m2).all(|v| v.is_finite()), "Adam leaves everything finite");
    for i in [nan_entry, inf_entry] {
        assert!(after[i] == finite[i] && m1[i] == 0.0 && m2[i] == 0.0, "entry {i}");
    }
    assert!(after[good] != finite[good] && m1[good] != 0.0, "the finite gradient is applied");
    assert!(f.read_paged(&t.model.grads).iter().all(|&g| g == 0.0), "every gradient cleared");

    let stats = f.trainer.read_stats().unwrap();
    let names: Vec<&str> = stats.sanitized.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, SANITIZED_SLOTS);
    let counted: Vec<u32> = stats.sanitized.iter().map(|(_, c)| *c).collect();
    assert_eq!(counted, [field_bad, render_bad, 2, occupancy_bad], "field, render, adam, occupancy");
    assert!(field_bad > 0 && render_bad > 0 && occupancy_bad > 0);
    assert_eq!(f.trainer.read_stats().unwrap().sanitized_total(), 0, "read_stats clears the counters");
}

/// A step whose per-sample buffers exceed the buffer limit runs in chunks of patches (the backward
/// then flags hash blocks for Adam): it gives the parameters and loss of the same step in one chunk.
#[test]
fn a_step_in_chunks_equals_the_step_in_one() {
    let mut config = config();
    config.loss.coarse_cuts = 0;
    config.train.patches_per_batch = 60;
    // 64 rays x 32 samples x 32-byte records per patch: 16 patches per MiB, 15 beside the room the
    // probes keep (one group's here): four chunks
    config.loss.probes = 1;
    let dataset = random_dataset(4, 24, 31);
    // clipping on: the gradient's norm comes from grad_norm in one chunk, grad_norm_blocks in four
    config.stability.clip_grad_norm = 1e-4;
    let whole = Trainer::new(common::gpu(), config.clone(), &dataset).unwrap();
    config.train.max_buffer_mb = 1;
    let chunked = Trainer::new(common::gpu(), config, &dataset).unwrap();
    assert_eq!((whole.chunks(), chunked.chunks()), (1, 4));
    assert!(!whole.shape.flag_blocks && chunked.shape.flag_blocks);
    assert_same_two_steps([whole, chunked]);
}

/// `train.recompute_backward = false`: the forward stores each active sample's activations and the
/// backward reads them instead of recomputing the field. Its gradients match the reference, and two
/// steps give the parameters and loss of a recomputing trainer. The stored activations are the
/// largest per-sample record, so under the same buffer limit the step runs in more chunks.
#[test]
fn a_backward_on_stored_activations_matches_reference() {
    let mut config = config();
    config.train.recompute_backward = false;
    let f = Fixture::new(common::gpu(), config.clone(), 4);
    assert!(f.trainer.shape.store_activations);
    field_backward_matches(&f);
    let t = &f.trainer;
    let words = t.layout.act_words() as usize;
    let acts: Vec<f32> = f.read(&t.train.activations, f.n_samples() * words);
    let active = active(&f.samples()).count();
    let written = acts.iter().filter(|v| **v != 0.0).count();
    assert!(written >= active * words * 3 / 4, "{written} activation words written for {active} samples");

    config.loss.coarse_cuts = 0;
    config.train.patches_per_batch = 60;
    config.loss.probes = 1;
    config.stability.clip_grad_norm = 1e-4;
    config.train.max_buffer_mb = 1;
    let dataset = random_dataset(4, 24, 31);
    let stored = Trainer::new(common::gpu(), config.clone(), &dataset).unwrap();
    config.train.recompute_backward = true;
    let recomputed = Trainer::new(common::gpu(), config, &dataset).unwrap();
    assert!(stored.chunks() > recomputed.chunks(), "{} vs {} chunks", stored.chunks(), recomputed.chunks());
    assert_same_two_steps([recomputed, stored]);
}

/// Mixed precision (`train.precision = "mixed"`): the field passes read the hash tables' f16 copy
/// and store the per-sample gradients in f16 times the loss scale. The arithmetic stays f32, so
/// forward and backward match the reference on f16-rounded tables as closely as f32 matches it on
/// f32 ones; stored activations in f16 cost the backward a little more (measured 1.3e-3 of a
/// tensor's scale; allowed 5e-3). The stated tolerance of the f16 forward against the f32 reference:
/// 5e-4 on rgb, 0.5% on the density, the largest over every active sample of random tables of
/// magnitude up to 1 and decoders up to 0.6 (measured 6.2e-5 and 0.04%).
#[test]
fn mixed_precision_matches_reference() {
    for store in [false, true] {
        let mut config = config();
        config.train.precision = Precision::Mixed;
        config.train.recompute_backward = !store;
        let f = Fixture::new(common::gpu(), config, 4);
        assert!(f.trainer.shape.half, "the adapter should have SHADER_F16 (lavapipe has)");
        assert_eq!(f.loss_scale(), 65536.0);
        if !store {
            common::assert_tables_copy_params(&f.trainer);
        }
        field_backward_within(&f, 2e-5, if store { 5e-3 } else { 1e-4 });
        let t = &f.trainer;
        // render_backward's f16 records, the loss scale taken out, against its reference: within
        // f16's rounding (2^-11 relative) of each gradient's scale
        let cpu_sample_grads =
            cpu::render_backward(&f.batch(), &f.samples(), &f.field_out(), &f.outputs(), &f.ray_grads());
        let sample_grads = f.sample_grads();
        let scale = |k: usize| cpu_sample_grads.iter().fold(0.0f64, |m, g| m.max(g[k].abs()));
        let scales = [scale(0).max(scale(1)).max(scale(2)), scale(3)];
        assert!(scales[0] > 0.0 && scales[1] > 0.0);
        for (s, (g, c)) in sample_grads.iter().zip(&cpu_sample_grads).enumerate() {
            for k in 0..4 {
                let tolerance = 1e-3 * scales[usize::from(k == 3)];
                assert!((g[k] - c[k]).abs() <= tolerance, "sample {s} gradient {k}: {:e} vs {:e}", g[k], c[k]);
            }
        }
        let params = to_f64(&t.read_params().unwrap());
        let (rays, samples) = (f.rays(), f.samples());
        let max_density = f64::from(t.config.field.max_density);
        let exact = cpu::field_forward(&t.layout, &params, &t.octree, &samples, &rays, max_density);
        let field = f.field_out();
        let (mut rgb, mut sigma) = (0.0f64, 0.0f64);
        for s in active(&samples) {
            for k in 0..3 {
                rgb = rgb.max((field[s][k] - exact[s][k]).abs());
            }
            sigma = sigma.max((field[s][3] - exact[s][3]).abs() / (1e-3 + exact[s][3].abs()));
        }
        eprintln!("f16 tables against f32: rgb within {rgb:.1e}, density within {:.2}%", 100.0 * sigma);
        assert!(rgb <= 5e-4 && sigma <= 5e-3, "rgb {rgb:e}, density {sigma:e}");
        assert!(rgb > 0.0, "the f16 copy should differ from the f32 tables");
    }
}

/// Two steps of the same plan from the same perturbed parameters give the same loss, gradient norm,
/// clipping and parameters on both trainers (clipping on in both).
fn assert_same_two_steps(mut trainers: [Trainer; 2]) {
    let params = trainers[0].read_params().unwrap();
    let mut rng = SplitMix64(3);
    let params: Vec<f32> = params.iter().map(|p| p + (rng.next_f32() - 0.5) * 0.5).collect();
    let plan = trainers[0].plan_step();
    let mut results = Vec::new();
    for t in &mut trainers {
        t.write_params(&params).unwrap();
        for _ in 0..2 {
            t.run_step(&plan, None).unwrap();
        }
        results.push((t.read_params().unwrap(), t.read_stats().unwrap()));
    }
    let [(a, stats_a), (b, stats_b)] = [&results[0], &results[1]];
    assert!((stats_a.mse - stats_b.mse).abs() <= 1e-5 * stats_a.mse, "loss {} vs {}", stats_a.mse, stats_b.mse);
    let (norm_a, norm_b) = (stats_a.guard.grad_norm, stats_b.guard.grad_norm);
    assert!(norm_a > 1e-4 && (norm_a - norm_b).abs() <= 1e-4 * norm_a, "gradient norm {norm_a} vs {norm_b}");
    assert_eq!((stats_a.guard.clipped, stats_b.guard.clipped), (2, 2));
    assert_eq!(stats_a.active_samples, stats_b.active_samples);
    let moved = a.iter().zip(&params).filter(|(x, p)| x != p).count();
    assert!(moved > a.len() / 20, "only {moved} parameters moved");
    // float atomics sum in another order: an entry whose gradient is ~0 may step the other way
    let differ = a.iter().zip(b.iter()).filter(|(x, y)| (*x - *y).abs() > 1e-5).count();
    assert!(differ * 1000 <= moved, "{differ} of {moved} moved parameters differ");
}

/// The regularisers: total variation of the rendered patches (colour and depth) adds its gradient to
/// the slots' after loss_mse; density sparsity adds its gradient to the samples' after
/// render_backward. Both against the reference, with their per-slot loss shares.
#[test]
fn tv_and_sparsity_match_reference() {
    let mut config = config();
    config.loss.lambda_tv = 0.3;
    config.loss.lambda_tv_depth = 0.2;
    config.loss.lambda_sparsity = 0.05;
    // the regularisers at full weight from the first step (the schedule starts them later)
    config.schedule.regularization_start_steps = 0;
    let f = Fixture::new(common::gpu(), config, 12);
    let t = &f.trainer;
    f.randomize_params(14);
    f.forward();
    let (batch, rays, samples, field, outputs) = (f.batch(), f.rays(), f.samples(), f.field_out(), f.outputs());
    let loss = f.loss();
    assert!(loss.lambdas[0][1] > 0.0 && loss.lambdas[0][2] > 0.0 && loss.lambdas[0][3] > 0.0);
    let slots = f.slots() as u32;
    f.run(|t, rec| t.record_losses(rec, &t.train, slots));
    let (mse_grads, _) = cpu::loss_mse(&batch, &loss, &rays, &outputs);
    let (tv_grads, [tv, tv_depth]) = cpu::loss_tv(&batch, &loss, &rays, &outputs);
    let ray_grads = f.ray_grads();
    let scale = |pick: fn(&OutputGrad) -> f64| tv_grads.iter().map(pick).fold(0.0f64, |m, v| m.max(v.abs()));
    let (rgb_scale, depth_scale) = (scale(|g| g.rgb[0]), scale(|g| g.depth));
    assert!(rgb_scale > 0.0 && depth_scale > 0.0);
    for slot in 0..f.slots() {
        let (g, m, v) = (&ray_grads[slot], &mse_grads[slot], &tv_grads[slot]);
        for k in 0..3 {
            let want = m.rgb[k] + v.rgb[k];
            assert!((g.rgb[k] - want).abs() <= 1e-5 * rgb_scale, "slot {slot} rgb {k}: {} vs {want}", g.rgb[k]);
        }
        assert!((g.depth - v.depth).abs() <= 1e-5 * depth_scale, "slot {slot} depth: {} vs {}", g.depth, v.depth);
    }
    let losses = to_f64(&f.read::<f32>(&t.train.losses, f.slots() * LOSS_TERMS));
    let row = |term: usize| &losses[term * f.slots()..(term + 1) * f.slots()];
    for (term, want) in [(cpu::TERM_TV, &tv), (cpu::TERM_TV_DEPTH, &tv_depth)] {
        let total: f64 = want.iter().sum();
        assert!(total > 0.0);
        for (slot, (g, c)) in row(term).iter().zip(want.iter()).enumerate() {
            assert!((g - c).abs() <= 1e-5 * total, "term {term} slot {slot}: {g} vs {c}");
        }
    }

    // render_backward, then sparsity adds its constant density gradient to the evaluated samples
    f.run(|t, rec| {
        rec.dispatch(&t.kernels.render_backward, &t.train.groups.render_backward, slots);
        rec.dispatch(&t.kernels.loss_sparsity, &t.train.groups.loss_sparsity, slots);
    });
    let render_grads = cpu::render_backward(&batch, &samples, &field, &outputs, &ray_grads);
    let (sparsity_grads, sparsity) = cpu::loss_sparsity(&batch, &loss, &samples, &field);
    let sample_grads = f.sample_grads();
    let density_scale = render_grads.iter().fold(0.0f64, |m, g| m.max(g[3].abs()));
    assert!(sparsity_grads.iter().any(|&g| g > 0.0));
    for s in 0..samples.len() {
        let want = render_grads[s][3] + sparsity_grads[s];
        assert!(
            (sample_grads[s][3] - want).abs() <= 2e-5 * density_scale,
            "sample {s}: {} vs {want}",
            sample_grads[s][3]
        );
    }
    let losses = to_f64(&f.read::<f32>(&t.train.losses, f.slots() * LOSS_TERMS));
    let total: f64 = sparsity.iter().sum();
    assert!(total > 0.0);
    for (slot, (g, c)) in losses[cpu::TERM_SPARSITY * f.slots()..].iter().zip(&sparsity).enumerate() {
        assert!((g - c).abs() <= 1e-5 * total, "sparsity of slot {slot}: {g} vs {c}");
    }
}

/// 1 - SSIM over 4 x 4 windows of the 8 x 8 patches and the depth consistency between the two
/// rendered cuts: their gradients added to loss_mse's, and their per-slot values, against the
/// references (which walk windows and pairs where the kernels gather per pixel).
#[test]
fn ssim_and_depth_consistency_match_reference() {
    let mut config = config();
    config.loss.lambda_ssim = 0.4;
    config.loss.ssim_window = 4;
    config.loss.lambda_depth_consistency = 0.3;
    config.loss.huber_delta = 0.02;
    config.schedule.geometric_warmup_steps = 0;
    assert_eq!(config.train.patch_size, 8);
    let f = Fixture::new(common::gpu(), config, 12);
    let t = &f.trainer;
    f.randomize_params(15);
    f.forward();
    let (batch, rays, outputs) = (f.batch(), f.rays(), f.outputs());
    let loss = f.loss();
    assert_eq!(batch.n_cuts, 2);
    assert_eq!(loss.finer_cut[..2], [NO_CUT, 0]);
    assert!(loss.inv_windows > 0.0 && loss.inv_rays > 0.0);
    let slots = f.slots() as u32;
    f.run(|t, rec| t.record_losses(rec, &t.train, slots));
    let (mse_grads, _) = cpu::loss_mse(&batch, &loss, &rays, &outputs);
    let (ssim_grads, ssim) = cpu::loss_ssim(&batch, &loss, &rays, &outputs);
    let (depth_grads, consistency) = cpu::loss_depth_consistency(&batch, &loss, &rays, &outputs);
    let ray_grads = f.ray_grads();
    let scale =
        |pick: fn(&OutputGrad) -> f64, grads: &[OutputGrad]| grads.iter().map(pick).fold(0.0f64, |m, v| m.max(v.abs()));
    let (rgb_scale, depth_scale) = (scale(|g| g.rgb[0], &ssim_grads), scale(|g| g.depth, &depth_grads));
    assert!(rgb_scale > 0.0 && depth_scale > 0.0);
    for slot in 0..f.slots() {
        let (g, m, v, d) = (&ray_grads[slot], &mse_grads[slot], &ssim_grads[slot], &depth_grads[slot]);
        for k in 0..3 {
            let want = m.rgb[k] + v.rgb[k];
            assert!((g.rgb[k] - want).abs() <= 1e-4 * rgb_scale, "slot {slot} rgb {k}: {} vs {want}", g.rgb[k]);
        }
        assert!((g.depth - d.depth).abs() <= 1e-5 * depth_scale, "slot {slot} depth: {} vs {}", g.depth, d.depth);
    }
    let losses = to_f64(&f.read::<f32>(&t.train.losses, f.slots() * LOSS_TERMS));
    let row = |term: usize| &losses[term * f.slots()..(term + 1) * f.slots()];
    for (term, want) in [(cpu::TERM_SSIM, &ssim), (cpu::TERM_DEPTH_CONSISTENCY, &consistency)] {
        let total: f64 = want.iter().sum();
        assert!(total > 0.0, "term {term}");
        for (slot, (g, c)) in row(term).iter().zip(want.iter()).enumerate() {
            assert!((g - c).abs() <= 1e-5 * total, "term {term} slot {slot}: {g} vs {c}");
        }
    }
    // the window count the host normalises by: (8 - 4 + 1)^2 windows in each patch wholly on its image
    let whole = f.plan.patches.len() as f32 * 25.0;
    assert!(loss.inv_windows >= 1.0 / (3.0 * whole) * 0.999, "{} windows", 1.0 / (3.0 * loss.inv_windows));
}

/// A batch of 2 x 2 patches with two 8 x 8 structure patches (16 tiles each) first: TV and SSIM see
/// each structure patch as one square, against the references, and the host's normalisers count its
/// pairs and windows.
#[test]
fn structure_patches_match_reference() {
    let mut config = config();
    config.train.patch_size = 2;
    config.train.patches_per_batch = 6;
    config.train.structure_patches = 2;
    config.train.structure_patch_size = 8;
    config.loss.lambda_tv = 0.3;
    config.loss.lambda_tv_depth = 0.2;
    config.loss.lambda_ssim = 0.4;
    config.loss.ssim_window = 4;
    config.schedule.regularization_start_steps = 0;
    let f = Fixture::new(common::gpu(), config, 12);
    let t = &f.trainer;
    assert_eq!(f.plan.patches.len(), 2 * 16 + 6);
    assert_eq!(f.rays, 38 * 4);
    // the tiles of a structure patch tile its square, row by row
    for group in 0..2 {
        let first = f.plan.patches[group * 16];
        for (k, tile) in f.plan.patches[group * 16..(group + 1) * 16].iter().enumerate() {
            assert_eq!((tile.view, tile.level), (first.view, first.level));
            assert_eq!((tile.x0, tile.y0), (first.x0 + 2 * (k as u32 % 4), first.y0 + 2 * (k as u32 / 4)));
        }
    }
    f.randomize_params(16);
    f.forward();
    let (batch, rays, outputs) = (f.batch(), f.rays(), f.outputs());
    assert_eq!((batch.group_tiles, batch.grouped_patches), (4, 32));
    let loss = f.loss();
    let slots = f.slots() as u32;
    f.run(|t, rec| t.record_losses(rec, &t.train, slots));
    let (mse_grads, _) = cpu::loss_mse(&batch, &loss, &rays, &outputs);
    let (tv_grads, [tv, tv_depth]) = cpu::loss_tv(&batch, &loss, &rays, &outputs);
    let (ssim_grads, ssim) = cpu::loss_ssim(&batch, &loss, &rays, &outputs);
    let ray_grads = f.ray_grads();
    let rgb_scale = tv_grads.iter().zip(&ssim_grads).fold(0.0f64, |m, (a, b)| m.max((a.rgb[0] + b.rgb[0]).abs()));
    let depth_scale = tv_grads.iter().fold(0.0f64, |m, g| m.max(g.depth.abs()));
    for slot in 0..f.slots() {
        for k in 0..3 {
            let want = mse_grads[slot].rgb[k] + tv_grads[slot].rgb[k] + ssim_grads[slot].rgb[k];
            let got = ray_grads[slot].rgb[k];
            assert!((got - want).abs() <= 1e-4 * rgb_scale, "slot {slot} rgb {k}: {got} vs {want}");
        }
        let (got, want) = (ray_grads[slot].depth, tv_grads[slot].depth);
        assert!((got - want).abs() <= 1e-5 * depth_scale, "slot {slot} depth: {got} vs {want}");
    }
    let losses = to_f64(&f.read::<f32>(&t.train.losses, f.slots() * LOSS_TERMS));
    let row = |term: usize| &losses[term * f.slots()..(term + 1) * f.slots()];
    for (term, want) in [(cpu::TERM_TV, &tv), (cpu::TERM_TV_DEPTH, &tv_depth), (cpu::TERM_SSIM, &ssim)] {
        let total: f64 = want.iter().sum();
        assert!(total > 0.0, "term {term}");
        for (slot, (g, c)) in row(term).iter().zip(want.iter()).enumerate() {
            assert!((g - c).abs() <= 1e-5 * total, "term {term} slot {slot}: {g} vs {c}");
        }
    }
    // SSIM windows exist only in the structure patches: 25 per 8 x 8 square on the image
    let windows = (1.0 / (3.0 * loss.inv_windows)).round() as u32;
    assert!(windows <= 2 * 25 && windows > 0, "{windows} windows");
    assert!(ssim.iter().enumerate().all(|(slot, &v)| v == 0.0 || slot % (f.rays as usize) < 128));
    // pairs per direction: 8 x 7 per structure patch, 2 x 1 per lone patch
    let pairs = (1.0 / (3.0 * loss.inv_pairs)).round() as u32;
    assert_eq!(pairs, 2 * 56 + 6 * 2);
}

/// The parameter L2: Adam adds l2 x p to the gradient of the entries it updates (against the
/// reference, and visibly: the same step without it lands elsewhere), and param_norm's reduction over
/// three pages gives the mean of p^2.
#[test]
fn parameter_l2_matches_reference() {
    let f = Fixture::new(common::gpu(), paged_config(), 5);
    let t = &f.trainer;
    assert!(t.model.paging.n_pages >= 3);
    let n = t.n_params() as usize;
    let mut rng = SplitMix64(21);
    let params: Vec<f32> = (0..n).map(|_| rng.next_f32() * 2.0 - 1.0).collect();
    t.write_params(&params).unwrap();
    let zeros = vec![0.0f32; n];
    f.write_paged(&t.model.m1, &zeros);
    f.write_paged(&t.model.m2, &zeros);
    let mean_square = params.iter().map(|&p| f64::from(p) * f64::from(p)).sum::<f64>() / n as f64;
    let measured = t.param_l2().unwrap();
    assert!((measured - mean_square).abs() <= 1e-5 * mean_square, "{measured} vs {mean_square}");

    let grads: Vec<f32> = (0..n).map(|i| if i % 4 == 0 { 0.0 } else { (rng.next_f32() - 0.5) * 1e-3 }).collect();
    let u = AdamUniforms { l2: 0.5, ..adam_uniforms(3) };
    let mut state = [params.clone(), zeros.clone(), zeros.clone()];
    adam_step(&f, &u, &mut state, &grads);
    let mut without = [params.clone(), zeros.clone(), zeros];
    let [p, a, b] = &mut without;
    cpu::adam(&adam_uniforms(3), &t.layout, p, a, b, &grads);
    // Adam's first step moves by about lr x sign(gradient): the decay (0.5 p, far above the gradients)
    // turns the step around where p and the gradient differ in sign, half of the 3/4 with a gradient
    let moved = (0..n).filter(|&i| (without[0][i] - state[0][i]).abs() > 1e-4).count();
    assert!(moved > n * 3 / 10, "the L2 moves {moved} of {n} parameters elsewhere");
    // entries without gradient do not decay (lazily)
    assert!((0..n).step_by(4).all(|i| state[0][i] == params[i]));
}

/// A term whose lambda is 0 costs nothing: its pass is not dispatched.
#[test]
fn terms_at_lambda_zero_are_not_dispatched() {
    let mut config = config();
    config.schedule.regularization_start_steps = 0;
    config.schedule.geometric_warmup_steps = 0;
    config.schedule.override_consistency = Some(1.0);
    let mut counts = Vec::new();
    let mut probes = Vec::new();
    for lambda in [0.0, 0.1] {
        config.loss.lambda_tv = lambda;
        config.loss.lambda_sparsity = lambda;
        config.loss.lambda_ssim = lambda;
        config.loss.lambda_depth_consistency = lambda;
        config.loss.lambda_normal_consistency = lambda;
        config.loss.lambda_density_consistency = lambda;
        config.loss.lambda_seam = lambda;
        let mut f = Fixture::new(common::gpu(), config.clone(), 12);
        probes.push(f.batch().probe_groups);
        f.trainer.run_step(&f.plan.clone(), None).unwrap();
        counts.push(f.trainer.last_dispatches);
    }
    // tv, sparsity, ssim, depth consistency; the probes and their losses
    assert_eq!(counts[1], counts[0] + 6, "dispatches per step: {counts:?}");
    // loss.probes (1024) capped at one per ray of the chunk (4 patches of 8 x 8)
    assert_eq!(probes, [0, 256], "probe groups");
}

/// The trainer weighs each term by lambda x its group's schedule multiplier x its balancer weight
/// (SPEC §3.6, §3.7), in the uniforms the loss passes read and in the choice of passes to run.
#[test]
fn the_schedule_and_the_balancer_weigh_the_terms() {
    let mut config = config();
    config.loss.lambda_tv = 0.2;
    config.schedule.regularization_start_steps = 100;
    let mut f = Fixture::new(common::gpu(), config, 12);
    let t = &mut f.trainer;
    assert_eq!(t.term_weight("tv", 0), 0.0);
    assert!((t.term_weight("tv", 150) - 0.1).abs() < 1e-7, "half way up the ramp");
    assert!((t.term_weight("tv", 5000) - 0.2).abs() < 1e-7);
    assert_eq!(t.loss_uniforms(150, &f.plan).lambdas[0][cpu::TERM_TV], t.term_weight("tv", 150));
    assert_eq!(t.term_weight("mse", 0), 0.7, "rgb is not scheduled");
    // the balancer: 1 / (1 + CV) of the last `balancer_window` values, once it has them
    t.config.schedule.balancer = true;
    t.config.schedule.balancer_window = 4;
    t.balancer.set_window(4);
    for v in [1.0, 3.0, 1.0] {
        t.balancer.record("mse", v);
        assert_eq!(t.term_weight("mse", 0), 0.7, "fewer than 4 values: weight 1");
    }
    t.balancer.record("mse", 3.0);
    // mean 2, population std 1: CV 1/2
    assert!((t.term_weight("mse", 0) - 0.7 / 1.5).abs() < 1e-6, "{}", t.term_weight("mse", 0));
    t.config.schedule.balancer = false;
    assert_eq!(t.term_weight("mse", 0), 0.7);
}

/// grad_norm + grad_guard against the reference on a real step's gradient (a depth-2 tree: nodes
/// whose samples cover their tables, whose entries are shared out, and nodes with few samples, whose
/// corners are counted once each), then Adam with the clipped gradient: the statistics per tensor,
/// the global norm, the clip factor, the parameters, and every `visited` mark cleared.
#[test]
fn gradient_statistics_and_clipping_match_reference() {
    let mut f = Fixture::new(common::gpu(), config(), 4);
    f.trainer.config.stability.clip_grad_norm = 1e-3;
    let t = &f.trainer;
    f.randomize_params(9);
    f.forward();
    f.losses_with_injected(23);
    f.backward();
    let grads = f.read_paged(&t.model.grads);
    let (stats, nonfinite) = cpu::grad_stats(&t.layout, &grads);
    assert_eq!(nonfinite, 0);
    let counts: Vec<u32> = f.read(&t.train.node_counts, t.octree.nodes.len());
    let dense_samples = t.layout.dense_samples();
    let dense = counts.iter().filter(|&&c| c >= dense_samples).count();
    let sparse = counts.iter().filter(|&&c| c > 0 && c < dense_samples).count();
    assert!(dense > 0 && sparse > 0, "{dense} dense and {sparse} sparse nodes: both paths must run");

    t.gpu.write(&t.model.guard_settings, &[t.guard_uniforms()]);
    f.run(|t, rec| t.record_guard(rec, &t.train));
    let words: Vec<f32> = f.read(&t.model.guard, guard::WORDS as usize);
    let close = |what: &str, gpu: f64, cpu: f64| {
        assert!((gpu - cpu).abs() <= 2e-4 * cpu.abs() + 1e-12, "{what}: {gpu} vs {cpu}");
    };
    let mut total = 0.0;
    for (k, s) in stats.iter().enumerate() {
        let at = (guard::TENSORS + 4 * k as u32) as usize;
        let mean = s[1] / s[2];
        close(&format!("tensor {k} norm"), f64::from(words[at]), s[0].sqrt());
        close(&format!("tensor {k} mean"), f64::from(words[at + 1]), mean);
        close(&format!("tensor {k} std"), f64::from(words[at + 2]), (s[0] / s[2] - mean * mean).sqrt());
        close(&format!("tensor {k} max"), f64::from(words[at + 3]), s[3]);
        total += s[0];
    }
    let norm = total.sqrt();
    close("global norm", f64::from(words[guard::NORM as usize]), norm);
    let scale = words[guard::SCALE as usize];
    assert!(norm > 1e-3, "the clip must bite: norm {norm}");
    close("clip factor", f64::from(scale), 1e-3 / norm);
    assert_eq!(words[guard::SKIP as usize], 0.0);

    let u = adam_uniforms(0);
    t.gpu.write(&t.model.adam, &[u]);
    let mut state = [t.read_params().unwrap(), f.read_paged(&t.model.m1), f.read_paged(&t.model.m2)];
    f.run(|t, rec| t.record_adam(rec, &t.train));
    let scaled: Vec<f32> = grads.iter().map(|g| g * scale).collect();
    let [params, m1, m2] = &mut state;
    cpu::adam(&u, &t.layout, params, m1, m2, &scaled);
    let gpu_params = t.read_params().unwrap();
    for (i, (g, c)) in gpu_params.iter().zip(params.iter()).enumerate() {
        assert!((g - c).abs() <= 2e-6 * (1e-3 + c.abs()), "param {i}: {g} vs {c}");
    }
    for p in 0..t.model.paging.n_pages {
        let words = t.model.paging.params(p).div_ceil(32) as usize;
        let visited: Vec<u32> = f.read(&t.model.visited[p as usize], words);
        assert!(visited.iter().all(|&v| v == 0), "page {p}: Adam clears every mark grad_norm set");
    }
    assert!(f.read_paged(&t.model.grads).iter().all(|&g| g == 0.0), "Adam clears the gradients");
}

/// The guard alone on a made-up step: the gradient's sum of squares spread over three slots and
/// tensors, `nonfinite` non-finite entries, the step's loss. Returns the guard's words.
fn guard_step(t: &Trainer, settings: GuardUniforms, sum_sq: f32, nonfinite: u32, loss: f32) -> Vec<f32> {
    let w = GRAD_SLOT_WORDS as usize;
    let mut partials = vec![0.0f32; GRAD_SLOTS as usize * w];
    for (slot, tensor, share) in [(0, 0, 0.5f32), (17, 1, 0.25), (63, 2, 0.25)] {
        partials[slot * w + 3 * tensor] = sum_sq * share;
        partials[slot * w + 3 * tensor + 2] = 1.0;
    }
    t.gpu.write(&t.model.guard_settings, &[settings]);
    t.gpu.write(&t.model.grad_partials, &partials);
    t.gpu.write(&t.model.grad_max, &[0u32, 0, 0, nonfinite]);
    t.gpu.write_at(&t.model.guard, u64::from(guard::STEP_LOSS), &[loss]);
    let mut rec = Recorder::new(&t.gpu, "guard test");
    rec.dispatch_groups(&t.kernels.grad_guard, &t.model.grad_guard_group, 1, 1);
    rec.submit();
    t.gpu.read(&t.model.guard, guard::WORDS as usize).unwrap()
}

/// The anomaly detector and clipping, step by step against the reference: a history filling up,
/// a loss spike, a norm spike, non-finite gradients (each skipped, kept out of the history), a
/// clipped step, a lasting change that restarts the history after `window` anomalies in a row, and
/// the detector switched off.
#[test]
fn guard_matches_reference_step_by_step() {
    let t = Trainer::new(common::gpu(), config(), &random_dataset(4, 24, 5)).unwrap();
    let window = 5;
    let on = GuardUniforms { clip: 1.5, sigma: 3.0, window, min_ratio: 2.0, growth_steps: 1000 };
    let off = GuardUniforms { sigma: 0.0, ..on };
    let noise = |i: u32, k: u32| 1.0 + 0.05 * (((i * k) % 5) as f32 - 2.0);
    // (settings, norm, non-finite entries, loss, expected anomaly)
    let mut steps: Vec<(GuardUniforms, f32, u32, f32, u32)> =
        (0..8).map(|i| (on, noise(i, 3), 0, noise(i, 7), 0)).collect();
    steps.extend([(on, 1.0, 0, 4.0, 1), (on, 3.0, 0, 1.0, 2), (on, 1.0, 2, 1.0, 3), (on, 1.02, 0, 0.98, 0)]);
    // a norm above the clip but below twice the mean: clipped, not an anomaly
    steps.push((on, 1.8, 0, 1.0, 0));
    // a lasting rise of the loss: `window` anomalies, then the history starts again with it
    steps.extend((0..window).map(|_| (on, 1.0, 0, 50.0, 1)));
    steps.extend([(on, 1.0, 0, 50.0, 0), (off, 1.0, 7, f32::NAN, 0)]);
    let mut reference = cpu::Guard::default();
    for (i, &(settings, norm, nonfinite, loss, anomaly)) in steps.iter().enumerate() {
        let words = guard_step(&t, settings, norm * norm, nonfinite, loss);
        let s = settings;
        let want = reference.step(norm * norm, nonfinite, loss, (s.clip, s.sigma, s.window as usize, s.min_ratio));
        assert_eq!(want.anomaly, anomaly, "step {i}: the reference's anomaly");
        let word = |w: u32| words[w as usize];
        assert_eq!(word(guard::SKIP) != 0.0, want.skip, "step {i}: skip");
        assert!(
            (word(guard::NORM) - want.norm).abs() <= 1e-6 * want.norm,
            "step {i}: norm {} vs {}",
            word(guard::NORM),
            want.norm
        );
        if !want.skip {
            assert!(
                (word(guard::SCALE) - want.scale).abs() <= 1e-6,
                "step {i}: scale {} vs {}",
                word(guard::SCALE),
                want.scale
            );
        }
        assert_eq!(word(guard::RUN) as u32, reference.run, "step {i}: anomalies in a row");
        assert_eq!(word(guard::FILLED) as usize, reference.loss_history.len(), "step {i}: history");
    }
    let words = guard_step(&t, off, 1.0, 0, 1.0);
    let report = infnerf::stability::GuardReport::from_words(&words);
    let r = &reference;
    assert_eq!(
        (report.anomalies_loss, report.anomalies_grad, report.anomalies_nonfinite),
        (r.anomalies[0], r.anomalies[1], r.anomalies[2])
    );
    assert_eq!((report.skipped, report.clipped, report.max_run), (r.skipped, r.clipped, window));
    assert_eq!((r.anomalies, r.skipped, r.clipped), ([1 + window, 1, 1], window + 3, 1));
}

/// Dynamic loss scaling on the device against `stability::LossScaler`, step by step: overflows
/// (non-finite gradient entries) halve the scale and skip the step without an anomaly, clean steps
/// double it every `growth_steps`, Adam's factor takes the scale out, the statistics are of the
/// unscaled gradient, and at scale 1 an overflow is an anomaly.
#[test]
fn loss_scaling_matches_reference_step_by_step() {
    let mut config = config();
    config.train.precision = Precision::Mixed;
    config.train.loss_scale_init = 8.0;
    let t = Trainer::new(common::gpu(), config, &random_dataset(4, 24, 5)).unwrap();
    assert!(t.model.half);
    let settings = GuardUniforms { clip: 0.0, sigma: 3.0, window: 5, min_ratio: 2.0, growth_steps: 3 };
    let mut reference = LossScaler::new(8.0, 3);
    let (o, c) = (true, false);
    let pattern = [c, o, c, c, c, c, o, o, o, o, c, c, c, o, c];
    let (mut overflows, mut anomalies) = (0, 0);
    for (i, &overflow) in pattern.iter().enumerate() {
        let scale = reference.scale;
        // the true gradient's norm is 0.5; the device sees it times the scale
        let words = guard_step(&t, settings, (0.5 * scale).powi(2), u32::from(overflow), 1.0);
        let skipped = reference.update(overflow);
        let word = |w: u32| words[w as usize];
        assert_eq!(word(guard::LOSS_SCALE), reference.scale, "step {i}: loss scale");
        assert_eq!(word(guard::CLEAN_STEPS) as u32, reference.clean_steps, "step {i}: clean steps");
        assert_eq!(word(guard::SKIP) != 0.0, overflow, "step {i}: skip");
        overflows += u32::from(skipped);
        anomalies += u32::from(overflow && !skipped);
        if !overflow {
            assert!((word(guard::NORM) - 0.5).abs() <= 1e-6, "step {i}: norm {}", word(guard::NORM));
            assert_eq!(word(guard::SCALE), 1.0 / scale, "step {i}: Adam's factor");
        }
    }
    assert_eq!((overflows, anomalies), (5, 1), "the last overflow comes at scale 1");
    let words = guard_step(&t, settings, 0.25, 0, 1.0);
    let report = infnerf::stability::GuardReport::from_words(&words);
    assert_eq!((report.overflows, report.anomalies_nonfinite, report.skipped), (5, 1, 6));
    assert_eq!(report.loss_scale, f64::from(reference.scale));
}

/// Uploads and read-backs larger than one staging piece (32 MiB) arrive whole and in order, also at
/// an offset that straddles a piece boundary.
#[test]
fn large_transfers_arrive_whole() {
    let gpu = common::gpu();
    let n = (40 << 20) / 4 + 7;
    let values: Vec<u32> = (0..n as u32).map(|i| i.wrapping_mul(2_654_435_761)).collect();
    let buffer = gpu.storage_init("large", bytemuck::cast_slice(&values)).unwrap();
    assert_eq!(gpu.read::<u32>(&buffer, n).unwrap(), values);
    let offset = (32 << 20) / 4 - 3;
    let patch: Vec<u32> = (0..(33 << 20) / 4).map(|i| !i).collect();
    let patch = &patch[..n - offset];
    gpu.write_at(&buffer, offset as u64, patch);
    let back = gpu.read::<u32>(&buffer, n).unwrap();
    assert_eq!(&back[..offset], &values[..offset]);
    assert_eq!(&back[offset..], patch);
}

/// probes.wgsl and loss_probes.wgsl against their references on the cameras' depth-2 tree, then
/// field_backward with the probes among the samples: the probe groups (points, nodes, steps), their
/// ranks among their nodes' samples, the field at them, each group's values and gradients, and the
/// parameter gradients of the whole batch.
#[test]
fn probes_and_their_losses_match_reference() {
    let mut config = config();
    common::probe_terms_on(&mut config, [0.3, 0.7, 0.5]);
    config.loss.probes = 96;
    let f = Fixture::new(common::gpu(), config, 7);
    let t = &f.trainer;
    let params = to_f64(&f.randomize_params(13));
    f.forward();
    let batch = f.batch();
    assert_eq!((batch.probe_groups, batch.probe_kinds), (96, 3));
    let n = f.n_samples();
    let total = n + 96 * cpu::PROBES_PER_GROUP;
    let samples: Vec<Sample> = f.read(&t.train.samples, total);
    let rays = f.rays();
    let cpu_probes = cpu::probes(&batch, &samples[..n], &t.octree);
    let (mut stencils, mut seams) = (0, 0);
    for (k, (g, c)) in samples[n..].iter().zip(&cpu_probes).enumerate() {
        assert_eq!(g.node, c.node, "probe {k}: {g:?} vs {c:?}");
        if c.node != cpu::NO_NODE {
            assert_eq!(
                (g.ray, g.delta.to_bits(), g.pos.map(f32::to_bits)),
                (c.ray, c.delta.to_bits(), c.pos.map(f32::to_bits)),
                "probe {k}"
            );
            stencils += usize::from(k % cpu::PROBES_PER_GROUP == 0);
            seams += usize::from(k % cpu::PROBES_PER_GROUP == 14);
        }
    }
    assert!(stencils > 80 && seams > 30, "{stencils} stencils and {seams} seams of 96 groups");
    // a stencil's child is below its parent; a seam joins two nodes of one depth
    for group in cpu_probes.chunks(cpu::PROBES_PER_GROUP) {
        if group[0].node != cpu::NO_NODE {
            assert_eq!(t.octree.nodes[group[0].node as usize].parent, group[7].node);
        }
        if group[14].node != cpu::NO_NODE {
            let (a, b) = (&t.octree.nodes[group[14].node as usize], &t.octree.nodes[group[15].node as usize]);
            assert!(a.depth == b.depth && group[14].node != group[15].node);
        }
    }

    // counts and ranks cover ray samples and probes alike
    let n_nodes = t.octree.nodes.len();
    let counts: Vec<u32> = f.read(&t.train.node_counts, n_nodes);
    assert_eq!(counts, cpu::node_counts(&samples, n_nodes), "node counts");
    let mut ranks: Vec<Vec<u32>> = vec![Vec::new(); n_nodes];
    for s in active(&samples) {
        ranks[samples[s].node as usize].push(samples[s].rank);
    }
    for (node, r) in ranks.iter_mut().enumerate() {
        r.sort_unstable();
        assert!(r.iter().copied().eq(0..counts[node]), "ranks of node {node}");
    }

    // the field at the probes
    let max_density = f64::from(t.config.field.max_density);
    let field: Vec<[f64; 4]> = f.read::<[f32; 4]>(&t.train.field_out, total).iter().map(|v| v.map(f64::from)).collect();
    let cpu_field = cpu::field_forward(&t.layout, &params, &t.octree, &samples, &rays, max_density);
    for s in active(&samples).filter(|&s| s >= n) {
        for k in 0..4 {
            let (g, c) = (field[s][k], cpu_field[s][k]);
            assert!((g - c).abs() <= 2e-5 * (1.0 + c.abs()), "probe {} output {k}: {g} vs {c}", s - n);
        }
    }

    // the losses on them, from the device's field
    let slots = f.slots() as u32;
    f.run(|t, rec| t.record_losses(rec, &t.train, slots));
    let loss = f.loss();
    assert_eq!(loss.inv_probes, 1.0 / 96.0);
    let (cpu_grads, cpu_values) = cpu::loss_probes(&loss, &samples[n..], &field[n..]);
    let grads: Vec<[f32; 4]> = f.read(&t.train.sample_grads, total);
    let scale = cpu_grads.iter().flatten().fold(0.0f64, |m, v| m.max(v.abs()));
    for (k, (g, c)) in grads[n..].iter().zip(&cpu_grads).enumerate() {
        for i in 0..4 {
            assert!((f64::from(g[i]) - c[i]).abs() <= 1e-4 * scale, "probe {k} gradient {i}: {} vs {}", g[i], c[i]);
        }
    }
    let losses = to_f64(&f.read::<f32>(&t.train.losses, f.slots() * LOSS_TERMS));
    let terms = [cpu::TERM_NORMAL_CONSISTENCY, cpu::TERM_DENSITY_CONSISTENCY, cpu::TERM_SEAM];
    for (g, values) in cpu_values.iter().enumerate() {
        for (i, &term) in terms.iter().enumerate() {
            let got = losses[term * f.slots() + g];
            assert!(
                (got - values[i]).abs() <= 1e-5 * (values[i].abs() + 1e-3),
                "group {g} term {term}: {got} vs {}",
                values[i]
            );
        }
    }
    let sums = terms.map(|term| losses[term * f.slots()..(term + 1) * f.slots()].iter().sum::<f64>());
    assert!(sums.iter().all(|&v| v > 0.0), "every term has a value: {sums:?}");

    // field_backward over ray samples and probes alike
    f.backward();
    let sample_grads: Vec<[f64; 4]> =
        f.read::<[f32; 4]>(&t.train.sample_grads, total).iter().map(|v| v.map(f64::from)).collect();
    let cpu_param_grads =
        cpu::field_backward(&t.layout, &params, &t.octree, &samples, &rays, &sample_grads, max_density);
    cpu::assert_close_per_tensor("field_backward with probes", &t.layout, &f.grads(), &cpu_param_grads, 1e-4);
}

/// Random LPIPS weights written as a weights file in `dir`, and settings that use them: two
/// structure patches of 32 pixels (4 x 4 tiles of 8), two lone patches.
fn lpips_config(dir: &common::TempDir, seed: u64) -> (Config, infnerf::lpips::LpipsWeights) {
    let weights = infnerf::lpips::LpipsWeights::random(seed);
    let path = dir.0.join("lpips.safetensors");
    weights.save(&path).unwrap();
    let mut config = config();
    config.train.patch_size = 8;
    config.train.patches_per_batch = 2;
    config.train.structure_patches = 2;
    config.train.structure_patch_size = 32;
    config.loss.lambda_lpips = 0.6;
    config.loss.lpips_weights = Some(path);
    (config, weights)
}

/// LPIPS's passes (input, five convolutions and two pools, heads, their backward, loss_lpips) on
/// random weights against the reference network: each square's value and every slot's colour
/// gradient, at two cuts, with pixels off the image (40-pixel images, squares drawn anywhere).
#[test]
fn lpips_matches_reference() {
    let dir = common::TempDir::new("lpips-kernels");
    let (config, weights) = lpips_config(&dir, 5);
    let trainer = Trainer::new(common::gpu(), config, &random_dataset(4, 40, 9)).unwrap();
    assert!(trainer.lpips_unavailable.is_none());
    let depth = trainer.octree.max_depth();
    let f = Fixture::on(trainer, &[depth, depth - 1]);
    f.randomize_params(3);
    f.forward();
    let (batch, rays, outputs, loss) = (f.batch(), f.rays(), f.outputs(), f.loss());
    assert_eq!((batch.group_tiles, batch.grouped_patches), (4, 32));
    let slots = f.slots() as u32;
    f.run(|t, rec| t.record_losses(rec, &t.train, slots));
    let plan = infnerf::lpips::Plan::new(32).unwrap();
    let w: Vec<f64> = weights.values.iter().map(|&v| f64::from(v)).collect();
    let (mse_grads, _) = cpu::loss_mse(&batch, &loss, &rays, &outputs);
    let (lpips_grads, lpips) = cpu::loss_lpips(&batch, &loss, &rays, &outputs, &w, &plan);
    let scale = lpips_grads.iter().fold(0.0f64, |m, g| m.max(g.rgb.iter().fold(0.0f64, |a, v| a.max(v.abs()))));
    assert!(scale > 0.0);
    let ray_grads = f.ray_grads();
    for slot in 0..f.slots() {
        for k in 0..3 {
            let want = mse_grads[slot].rgb[k] + lpips_grads[slot].rgb[k];
            let got = ray_grads[slot].rgb[k];
            assert!((got - want).abs() <= 2e-3 * scale, "slot {slot} rgb {k}: {got} vs {want} (scale {scale})");
        }
    }
    let losses = to_f64(&f.read::<f32>(&f.trainer.train.losses, f.slots() * LOSS_TERMS));
    let row = &losses[cpu::TERM_LPIPS * f.slots()..(cpu::TERM_LPIPS + 1) * f.slots()];
    assert_eq!(lpips.iter().filter(|&&v| v > 0.0).count(), 2 * 2, "a value per square and cut");
    for (slot, (g, c)) in row.iter().zip(&lpips).enumerate() {
        assert!((g - c).abs() <= 1e-4 * c.abs().max(1e-3), "slot {slot}: {g} vs {c}");
    }
}

/// The adversarial passes (the discriminator forward on renders at two cuts and targets, both
/// losses, the generator's backward to the colours, the discriminator's weight gradients and its
/// Adam update) against the reference.
#[test]
fn adversarial_matches_reference() {
    let mut config = config();
    config.train.patch_size = 8;
    config.train.patches_per_batch = 2;
    config.train.structure_patches = 2;
    config.train.structure_patch_size = 16;
    config.loss.lambda_adversarial = 0.3;
    let trainer = Trainer::new(common::gpu(), config, &random_dataset(4, 24, 13)).unwrap();
    let depth = trainer.octree.max_depth();
    let f = Fixture::on(trainer, &[depth, depth - 1]);
    f.randomize_params(8);
    f.forward();
    let (batch, rays, outputs, loss) = (f.batch(), f.rays(), f.outputs(), f.loss());
    assert_eq!((batch.group_tiles, batch.grouped_patches), (2, 8));
    let disc = f.trainer.discriminator.as_ref().expect("a discriminator");
    let before = to_f64(&f.read::<f32>(&disc.params, disc.count as usize));
    let slots = f.slots() as u32;
    f.run(|t, rec| t.record_losses(rec, &t.train, slots));
    let (mse_grads, _) = cpu::loss_mse(&batch, &loss, &rays, &outputs);
    let (adv_grads, gen, dis, disc_grad) = cpu::loss_adversarial(&batch, &loss, &rays, &outputs, &before, 16);
    let scale = adv_grads.iter().fold(0.0f64, |m, g| m.max(g.rgb.iter().fold(0.0f64, |a, v| a.max(v.abs()))));
    assert!(scale > 0.0);
    let ray_grads = f.ray_grads();
    for slot in 0..f.slots() {
        for k in 0..3 {
            let want = mse_grads[slot].rgb[k] + adv_grads[slot].rgb[k];
            let got = ray_grads[slot].rgb[k];
            assert!((got - want).abs() <= 1e-3 * scale, "slot {slot} rgb {k}: {got} vs {want}");
        }
    }
    let losses = to_f64(&f.read::<f32>(&f.trainer.train.losses, f.slots() * LOSS_TERMS));
    for (term, want, count) in [(cpu::TERM_ADVERSARIAL, &gen, 4), (cpu::TERM_DISCRIMINATOR, &dis, 2)] {
        let row = &losses[term * f.slots()..(term + 1) * f.slots()];
        assert_eq!(want.iter().filter(|&&v| v > 0.0).count(), count, "term {term}");
        for (slot, (g, c)) in row.iter().zip(want.iter()).enumerate() {
            assert!((g - c).abs() <= 1e-5 * c.abs().max(1e-2), "term {term} slot {slot}: {g} vs {c}");
        }
    }
    let grads = to_f64(&f.read::<f32>(&disc.grads, disc.count as usize));
    let (diff, grad_scale) = common::max_diff(&grads, &disc_grad);
    assert!(grad_scale > 0.0 && diff <= 1e-3 * grad_scale, "discriminator gradient: {diff} of {grad_scale}");
    // the first Adam step moves each parameter by lr x sign(gradient)
    let after = to_f64(&f.read::<f32>(&disc.params, disc.count as usize));
    let lr = f64::from(f.trainer.config.loss.discriminator_lr);
    let mut moved = 0;
    for i in 0..after.len() {
        if disc_grad[i].abs() > 1e-4 * grad_scale {
            let want = before[i] - lr * disc_grad[i].signum();
            assert!((after[i] - want).abs() <= 1e-3 * lr, "parameter {i}: {} vs {want}", after[i]);
            moved += 1;
        }
    }
    assert!(moved > after.len() / 2, "{moved} of {} parameters moved", after.len());
}

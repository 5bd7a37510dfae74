//! Every WGSL pass against its CPU reference (tests/common/reference.rs), on whatever adapter is
//! present (lavapipe in CI).

mod common;

use common::reference as cpu;
use common::{gpu, max_diff, random_dataset, tiny_config};
use infnerf::gpu::records::{Frame, GpuCamera, Patch, Ray, RayResult, Sample};
use infnerf::trainer::{dispatch, Trainer};

fn encode(trainer: &Trainer, f: impl FnOnce(&mut wgpu::CommandEncoder)) {
    let mut encoder = trainer.gpu.device.create_command_encoder(&Default::default());
    f(&mut encoder);
    trainer.gpu.queue.submit([encoder.finish()]);
}

/// A trainer on a random scene with the step's patches and uniforms written, nothing run yet.
fn prepared(seed: u64) -> (Trainer, Frame, Vec<Patch>) {
    prepared_with(seed, |_| {})
}

fn prepared_with(seed: u64, adjust: impl Fn(&mut infnerf::config::Config)) -> (Trainer, Frame, Vec<Patch>) {
    let mut dataset = random_dataset(4, 24, seed);
    // one camera with lens distortion, so the undistortion runs in the kernel
    dataset.train[1].camera.distortion = [-0.1, 0.02, 0.001, -0.002];
    let mut config = tiny_config();
    config.field.max_depth = 2;
    config.field.finest_resolution = 16;
    adjust(&mut config);
    let mut trainer = Trainer::new(gpu(), config, &dataset).unwrap();
    let (frame, patches) = trainer.prepare_step(7);
    (trainer, frame, patches)
}

fn run_rays(trainer: &Trainer, frame: &Frame) -> Vec<Ray> {
    encode(trainer, |e| dispatch(e, "rays", &trainer.pipelines.rays, &trainer.bind_groups.rays, frame.n_rays, 64));
    trainer.gpu.read(&trainer.buffers.rays, frame.n_rays as usize).unwrap()
}

#[test]
fn rays_match_reference() {
    let (trainer, mut frame, _) = prepared(1);
    // every view, full resolution and coarser levels, a patch that runs off the coarse image's edge
    let patches = vec![
        Patch { view: 0, level: 0, x0: 3, y0: 5 },
        Patch { view: 1, level: 0, x0: 10, y0: 0 },
        Patch { view: 1, level: 1, x0: 2, y0: 4 },
        Patch { view: 2, level: 2, x0: 0, y0: 0 },
    ];
    frame.seed = 1234;
    trainer.gpu.write(&trainer.buffers.patches, &patches);
    trainer.gpu.write(&trainer.buffers.frame, &[frame]);
    let gpu_rays = run_rays(&trainer, &frame);
    let cameras: Vec<GpuCamera> = trainer.gpu.read(&trainer.buffers.cameras, 4).unwrap();
    let offsets: Vec<u32> =
        trainer.gpu.read(&trainer.buffers.image_offsets, (4 * frame.pyramid_levels) as usize).unwrap();
    let pixel_count = (trainer.buffers.pixels.size() / 4) as usize;
    let pixels: Vec<u32> = trainer.gpu.read(&trainer.buffers.pixels, pixel_count).unwrap();
    let cpu_rays = cpu::rays(&frame, &cameras, &patches, &offsets, &pixels);
    let mut valid = 0;
    for (g, c) in gpu_rays.iter().zip(&cpu_rays) {
        for k in 0..3 {
            assert!((g.origin[k] - c.origin[k]).abs() < 1e-5);
            assert!((g.dir[k] - c.dir[k]).abs() < 1e-5, "dir {g:?} vs {c:?}");
        }
        assert!((g.near - c.near).abs() < 1e-4 && (g.far - c.far).abs() < 1e-4, "{g:?} vs {c:?}");
        for k in 0..4 {
            assert!((g.target_rgb[k] - c.target_rgb[k]).abs() < 1e-6, "target {g:?} vs {c:?}");
        }
        assert_eq!((g.pixel, g.background), (c.pixel, c.background));
        assert!((g.pixel_radius - c.pixel_radius).abs() < 1e-7);
        valid += (c.far > c.near) as u32;
    }
    assert!(valid > frame.n_rays / 2, "most rays should hit the cube ({valid} of {})", frame.n_rays);
}

#[test]
fn undistortion_inverts_the_opencv_model() {
    let k = [-0.12, 0.03, 0.001, -0.002];
    for p in [[0.1, -0.2], [0.4, 0.3], [-0.5, 0.05]] {
        let back = cpu::undistort_for_test(cpu::distort(p, k), k);
        assert!((back[0] - p[0]).abs() < 1e-9 && (back[1] - p[1]).abs() < 1e-9);
    }
}

#[test]
fn samples_and_level_choice_match_reference() {
    let (trainer, frame, _) = prepared(2);
    let rays = run_rays(&trainer, &frame);
    let n = (frame.n_rays * frame.samples_per_ray) as usize;
    encode(&trainer, |e| trainer.encode_samples(e, n as u32));
    let gpu_samples: Vec<Sample> = trainer.gpu.read(&trainer.buffers.samples, n).unwrap();
    let cpu_samples = cpu::samples(&frame, &rays, &trainer.octree, &[], 0.0);
    let mut mismatched = 0;
    let mut per_depth = vec![0usize; 4];
    for (g, c) in gpu_samples.iter().zip(&cpu_samples) {
        assert!((g.t - c.t).abs() < 1e-5 && (g.delta - c.delta).abs() < 1e-6);
        mismatched += (g.node != c.node) as usize;
        if c.node != cpu::NO_NODE {
            per_depth[trainer.octree.nodes[c.node as usize].depth as usize] += 1;
        }
    }
    // exp2 may round differently on the GPU: a sample exactly at a gsd boundary may flip level
    assert!(mismatched * 1000 <= n, "{mismatched} of {n} samples chose another node");
    assert!(per_depth.iter().filter(|&&c| c > 0).count() >= 2, "samples should use several levels: {per_depth:?}");
}

/// Random parameters that make every activation matter (the initial hash entries are tiny).
fn randomize_params(trainer: &Trainer, seed: u64) -> Vec<f32> {
    let mut rng = infnerf::field::SplitMix64(seed);
    let l = &trainer.layout;
    let params: Vec<f32> = (0..trainer.n_params)
        .map(|i| {
            let scale = if i % l.node_params < l.hash_params { 1.0 } else { 0.6 };
            (rng.next_f32() * 2.0 - 1.0) * scale
        })
        .collect();
    trainer.write_params(&params).unwrap();
    params
}

fn forward_samples(trainer: &Trainer, frame: &Frame) -> (Vec<Ray>, Vec<Sample>) {
    let rays = run_rays(trainer, frame);
    let n = frame.n_rays * frame.samples_per_ray;
    encode(trainer, |e| {
        trainer.encode_samples(e, n);
        trainer.encode_field_forward(e);
        dispatch(e, "render", &trainer.pipelines.render, &trainer.bind_groups.render, frame.n_rays, 64);
    });
    let samples = trainer.gpu.read(&trainer.buffers.samples, n as usize).unwrap();
    (rays, samples)
}

#[test]
fn field_forward_and_render_match_reference() {
    let (trainer, frame, _) = prepared(3);
    let params: Vec<f64> = randomize_params(&trainer, 5).into_iter().map(f64::from).collect();
    let (rays, samples) = forward_samples(&trainer, &frame);
    let n = samples.len();
    let gpu_field: Vec<[f32; 4]> = trainer.gpu.read(&trainer.buffers.field_out, n).unwrap();
    let cpu_field =
        cpu::field_forward(&trainer.layout, &params, &trainer.octree, &samples, &rays, f64::from(frame.max_density));
    let flat_gpu: Vec<f64> = gpu_field.iter().flatten().map(|&v| f64::from(v)).collect();
    let flat_cpu: Vec<f64> = cpu_field.iter().flatten().copied().collect();
    for (g, c) in flat_gpu.iter().zip(&flat_cpu) {
        assert!((g - c).abs() <= 1e-4 * (1.0 + c.abs()), "field {g} vs {c}");
    }
    assert!(cpu_field.iter().any(|f| f[3] > 1.0), "some samples should be dense");

    // render from the GPU's own field outputs, so only the compositing is compared
    let field64: Vec<[f64; 4]> = gpu_field.iter().map(|f| f.map(f64::from)).collect();
    let bg = cpu::ray_backgrounds(&frame, &rays);
    assert!(bg.iter().any(|b| b[0] != 1.0), "training rays get random backgrounds");
    let cpu_render = cpu::render_forward(&samples, &field64, frame.samples_per_ray as usize, &bg);
    let gpu_render: Vec<RayResult> = trainer.gpu.read(&trainer.buffers.results, frame.n_rays as usize).unwrap();
    for (g, c) in gpu_render.iter().zip(&cpu_render) {
        assert!(cpu::results_close(g, c, 2e-5), "render {g:?} vs {c:?}");
    }
    let cpu_loss = cpu::mse_loss(&cpu_render, &rays, f64::from(frame.inv_count));
    let gpu_loss: f64 = gpu_render.iter().map(|r| f64::from(r.loss)).sum::<f64>() * f64::from(frame.inv_count);
    assert!((cpu_loss - gpu_loss).abs() <= 1e-5 * cpu_loss, "loss {gpu_loss} vs {cpu_loss}");

    // loss_stats.wgsl: the step's loss and evaluated-sample count, summed into the statistics buffer
    encode(&trainer, |e| {
        dispatch(e, "stats", &trainer.pipelines.loss_stats, &trainer.bind_groups.loss_stats, 256, 256)
    });
    let stats: Vec<f32> = trainer.gpu.read(&trainer.buffers.stats, 3).unwrap();
    let evaluated = samples.iter().filter(|s| s.node != cpu::NO_NODE).count() as f32;
    assert!((f64::from(stats[0]) - cpu_loss).abs() <= 1e-5 * cpu_loss, "stats loss {} vs {cpu_loss}", stats[0]);
    assert_eq!((stats[1], stats[2]), (1.0, evaluated));

    let cpu_grads = cpu::render_backward(
        &samples,
        &field64,
        &rays,
        frame.samples_per_ray as usize,
        &bg,
        f64::from(frame.inv_count),
    );
    let gpu_grads: Vec<[f32; 4]> = trainer.gpu.read(&trainer.buffers.sample_grads, n).unwrap();
    let g: Vec<f64> = gpu_grads.iter().flatten().map(|&v| f64::from(v)).collect();
    let c: Vec<f64> = cpu_grads.iter().flatten().copied().collect();
    let (diff, scale) = max_diff(&g, &c);
    assert!(scale > 0.0 && diff <= 1e-4 * scale, "render gradients differ by {diff} (scale {scale})");
}

fn field_backward_matches(trainer: Trainer, frame: Frame) {
    let params: Vec<f64> = randomize_params(&trainer, 9).into_iter().map(f64::from).collect();
    let (rays, samples) = forward_samples(&trainer, &frame);
    let n = samples.len();
    let sample_grads: Vec<[f32; 4]> = trainer.gpu.read(&trainer.buffers.sample_grads, n).unwrap();
    encode(&trainer, |e| trainer.encode_field_backward(e));
    let gpu_grads: Vec<f32> = trainer.gpu.read(&trainer.buffers.grads, trainer.n_params as usize).unwrap();
    let g64: Vec<[f64; 4]> = sample_grads.iter().map(|g| g.map(f64::from)).collect();
    let cpu_grads = cpu::field_backward(
        &trainer.layout,
        &params,
        &trainer.octree,
        &samples,
        &rays,
        &g64,
        f64::from(frame.max_density),
    );
    let g: Vec<f64> = gpu_grads.iter().map(|&v| f64::from(v)).collect();
    let (diff, scale) = max_diff(&g, &cpu_grads);
    assert!(scale > 0.0 && diff <= 2e-4 * scale, "field gradients differ by {diff} (scale {scale})");
    let nonzero = cpu_grads.iter().filter(|v| **v != 0.0).count();
    assert!(nonzero > 1000, "only {nonzero} parameters got gradients");
}

#[test]
fn field_backward_matches_reference() {
    let (trainer, frame, _) = prepared(4);
    field_backward_matches(trainer, frame);
}

#[test]
fn field_backward_cas_fallback_matches_reference() {
    let dataset = random_dataset(4, 24, 4);
    let mut config = tiny_config();
    config.field.max_depth = 2;
    config.field.finest_resolution = 16;
    let mut trainer = Trainer::new(common::gpu_cas(), config, &dataset).unwrap();
    assert!(!trainer.shape.float_atomics);
    let (frame, _) = trainer.prepare_step(7);
    field_backward_matches(trainer, frame);
}

#[test]
fn adam_matches_reference() {
    let (trainer, frame, _) = prepared(5);
    let mut rng = infnerf::field::SplitMix64(11);
    let n = trainer.n_params as usize;
    let mut params: Vec<f32> = (0..n).map(|_| rng.next_f32() - 0.5).collect();
    let mut moments: Vec<[f32; 2]> = (0..n).map(|_| [rng.next_f32() * 0.1 - 0.05, rng.next_f32() * 0.01]).collect();
    // a third of the entries without gradient, and a long run without (skipped whole): they must keep
    // their moments
    let no_grad = |i: usize| i.is_multiple_of(3) || (1001..1517).contains(&i);
    let grads: Vec<f32> = (0..n).map(|i| if no_grad(i) { 0.0 } else { rng.next_f32() - 0.5 }).collect();
    trainer.write_params(&params).unwrap();
    trainer.gpu.write(&trainer.buffers.moments, &moments);
    trainer.gpu.write(&trainer.buffers.grads, &grads);
    encode(&trainer, |e| trainer.encode_adam(e));
    let gpu_params = trainer.read_params().unwrap();
    let gpu_moments: Vec<[f32; 2]> = trainer.gpu.read(&trainer.buffers.moments, n).unwrap();
    let gpu_grads: Vec<f32> = trainer.gpu.read(&trainer.buffers.grads, n).unwrap();
    cpu::adam(&frame, &trainer.layout, &mut params, &mut moments, &grads);
    for i in 0..n {
        assert!((gpu_params[i] - params[i]).abs() <= 1e-6 * (1.0 + params[i].abs()), "param {i}");
        assert!((gpu_moments[i][0] - moments[i][0]).abs() <= 1e-6 && (gpu_moments[i][1] - moments[i][1]).abs() <= 1e-6);
    }
    assert!(gpu_grads.iter().all(|&g| g == 0.0), "Adam clears the gradients");
}

#[test]
fn occupancy_update_matches_reference() {
    let (trainer, mut frame, _) = prepared_with(6, |c| c.train.occupancy_resolution = 16);
    let params: Vec<f64> = randomize_params(&trainer, 13).into_iter().map(f64::from).collect();
    assert!(trainer.octree.depth_counts().len() == 3, "cells of every depth are visited");
    frame.occ_decay = 0.5;
    frame.occ_phase = 3;
    trainer.gpu.write(&trainer.buffers.frame, &[frame]);
    let cells = 16 * 16 * 16;
    let old: Vec<f32> = (0..cells).map(|i| (i % 7) as f32).collect();
    trainer.gpu.write(&trainer.buffers.occupancy, &old);
    encode(&trainer, |e| {
        trainer.encode_decoders(e);
        trainer.encode_occupancy(e, 3);
    });
    let gpu_grid: Vec<f32> = trainer.gpu.read(&trainer.buffers.occupancy, cells).unwrap();
    let cpu_grid = cpu::occupancy_update(&frame, &trainer.layout, &params, &trainer.octree, &old);
    for (g, c) in gpu_grid.iter().zip(&cpu_grid) {
        assert!((f64::from(*g) - c).abs() <= 1e-4 * (1.0 + c.abs()), "cell {g} vs {c}");
    }
    assert!(cpu_grid.iter().zip(&old).any(|(c, o)| *c > f64::from(*o) * 0.5), "some cells take the new density");
    let mean: Vec<f32> = trainer.gpu.read(&trainer.buffers.occupancy_mean, 1).unwrap();
    let cpu_mean = cpu_grid.iter().sum::<f64>() / cells as f64;
    assert!((f64::from(mean[0]) - cpu_mean).abs() <= 1e-4 * cpu_mean, "mean {} vs {cpu_mean}", mean[0]);
}

#[test]
fn occupancy_skips_empty_cells_and_compacts_the_rest() {
    let (trainer, mut frame, _) = prepared(7);
    let rays = run_rays(&trainer, &frame);
    let res = trainer.config.train.occupancy_resolution;
    let mut rng = infnerf::field::SplitMix64(5);
    // a blob of dense cells in a grid of mostly empty ones
    let grid: Vec<f32> = (0..res * res * res)
        .map(|c| {
            let (x, y, z) = (c % res, (c / res) % res, c / (res * res));
            let inside = [x, y, z].iter().all(|&v| v > res / 4 && v < 3 * res / 4);
            if inside {
                5.0 + rng.next_f32()
            } else {
                0.01 * rng.next_f32()
            }
        })
        .collect();
    let mean = grid.iter().sum::<f32>() / grid.len() as f32;
    trainer.gpu.write(&trainer.buffers.occupancy, &grid);
    trainer.gpu.write(&trainer.buffers.occupancy_mean, &[mean]);
    frame.occ_skip = 1;
    assert_eq!(frame.training, 1);
    frame.occ_explore = 0.1;
    trainer.gpu.write(&trainer.buffers.frame, &[frame]);
    let n = (frame.n_rays * frame.samples_per_ray) as usize;
    encode(&trainer, |e| trainer.encode_samples(e, n as u32));
    let gpu_samples: Vec<Sample> = trainer.gpu.read(&trainer.buffers.samples, n).unwrap();
    let cpu_samples = cpu::samples(&frame, &rays, &trainer.octree, &grid, mean);
    let mismatched = gpu_samples.iter().zip(&cpu_samples).filter(|(g, c)| g.node != c.node).count();
    assert!(mismatched * 1000 <= n, "{mismatched} of {n} samples differ");
    let active: Vec<u32> = (0..n as u32).filter(|&s| gpu_samples[s as usize].node != cpu::NO_NODE).collect();
    assert!(!active.is_empty() && active.len() < n / 2, "{} of {n} active", active.len());
    // about occ_explore of the samples in empty cells are kept, the rest skipped
    let empty = |s: &Sample| grid[cpu::occupancy_cell(s.pos, res)] < mean;
    let in_empty = cpu_samples.iter().filter(|s| s.delta > 0.0 && empty(s)).count();
    let explored = active.iter().filter(|&&s| empty(&gpu_samples[s as usize])).count();
    let fraction = explored as f64 / in_empty as f64;
    assert!(in_empty > 1000 && (0.07..0.13).contains(&fraction), "{explored} of {in_empty} empty samples kept");

    let count: Vec<u32> = trainer.gpu.read(&trainer.buffers.active_count, 1).unwrap();
    assert_eq!(count[0] as usize, active.len());
    let list: Vec<u32> = trainer.gpu.read(&trainer.buffers.active_list, active.len()).unwrap();
    let mut sorted = list.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, active, "the list holds exactly the active samples");

    // the list is sorted by node; each node's block header says where its part is
    let nodes: Vec<u32> = list.iter().map(|&s| gpu_samples[s as usize].node).collect();
    assert!(nodes.windows(2).all(|w| w[0] <= w[1]), "the active list is not sorted by node");
    let stride = trainer.shape.decoder_stride() as usize / 4;
    let n_nodes = trainer.octree.nodes.len();
    let blocks: Vec<u32> = trainer.gpu.read(&trainer.buffers.decoders, n_nodes * stride).unwrap();
    let args: Vec<u32> = trainer.gpu.read(&trainer.buffers.dispatch_args, n_nodes * 6).unwrap();
    for node in 0..n_nodes {
        let (offset, count) = (blocks[node * stride] as usize, blocks[node * stride + 1] as usize);
        assert_eq!(blocks[node * stride + 2] as usize, node);
        assert_eq!(count, nodes.iter().filter(|&&n| n as usize == node).count());
        assert!(nodes[offset..offset + count].iter().all(|&n| n as usize == node));
        assert_eq!(args[node * 6] * args[node * 6 + 1], count.div_ceil(64) as u32, "forward workgroups of node {node}");
        let backward = count.div_ceil(trainer.shape.backward_workgroup as usize) as u32;
        assert_eq!(args[node * 6 + 3] * args[node * 6 + 4], backward, "backward workgroups of node {node}");
    }
    // the decoder blocks hold each node's decoder parameters
    let params = trainer.read_params().unwrap();
    let words: Vec<f32> = bytemuck::cast_slice(&blocks).to_vec();
    let l = &trainer.layout;
    for node in 0..n_nodes {
        let mlp = &params[node * l.node_params as usize + l.hash_params as usize..(node + 1) * l.node_params as usize];
        assert_eq!(&words[node * stride + 4..node * stride + 4 + mlp.len()], mlp, "decoder block of node {node}");
    }
}

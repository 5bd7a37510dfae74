//! The trained state on the device: the octree, every node's parameter block with its gradient and
//! Adam moments split into pages of whole nodes, and the occupancy grid.
//!
//! Paging: no buffer may exceed the adapter's largest storage binding (128 MiB on lavapipe, 2 GiB on
//! NVIDIA), so the per-parameter buffers are pages of whole nodes, each a buffer of its own. A node's
//! block stays one contiguous unit inside its page (SPEC §1: independently loadable); the passes that
//! touch parameters run once per page. The only limit left is device memory.

use crate::field::FieldLayout;
use crate::gpu::kernel::Recorder;
use crate::gpu::records::{
    guard, AdamUniforms, GuardUniforms, Page, Sampling, Scene, GRAD_SLOTS, GRAD_SLOT_WORDS, GRAD_TENSORS,
    NORM_PARTIALS, OCC_PHASES, SANITIZED_SLOTS, STATS_WORDS,
};
use crate::gpu::shader::ADAM_BLOCK;
use crate::gpu::Gpu;
use crate::kernels::{
    AdamBlocksBindings, GradGuardBindings, GradNormBlocksBindings, Kernels, OccupancyBindings, OccupancyMeanBindings,
    ParamNormBindings, TablesRefreshBindings,
};
use crate::octree::Octree;
use anyhow::{bail, Result};
use std::ops::Range;

/// How the nodes are split into pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Paging {
    pub n_nodes: u32,
    pub node_params: u32,
    /// Whole nodes per page (the last page may hold fewer).
    pub nodes_per_page: u32,
    pub n_pages: u32,
}

impl Paging {
    /// As many whole nodes per page as `max_bytes` holds.
    pub fn new(n_nodes: u32, node_params: u32, max_bytes: u64) -> Result<Self> {
        let node_bytes = u64::from(node_params) * 4;
        if node_bytes > max_bytes {
            bail!(
                "one node's parameters take {} MiB, more than one buffer of this adapter may hold ({} MiB): \
                 lower field.log2_table_size or field.hash_levels",
                node_bytes >> 20,
                max_bytes >> 20
            );
        }
        let nodes_per_page = (max_bytes / node_bytes).clamp(1, u64::from(n_nodes.max(1))) as u32;
        Ok(Self { n_nodes, node_params, nodes_per_page, n_pages: n_nodes.div_ceil(nodes_per_page) })
    }

    pub fn nodes(&self, page: u32) -> Range<u32> {
        let first = page * self.nodes_per_page;
        first..(first + self.nodes_per_page).min(self.n_nodes)
    }

    pub fn params(&self, page: u32) -> u64 {
        self.nodes(page).len() as u64 * u64::from(self.node_params)
    }

    /// Blocks of `ADAM_BLOCK` parameters of a page (Adam's invocations).
    pub fn blocks(&self, page: u32) -> u64 {
        self.params(page).div_ceil(u64::from(ADAM_BLOCK))
    }

    pub fn page_of(&self, node: u32) -> u32 {
        node / self.nodes_per_page
    }
}

/// The device state of a field: parameters, gradients, moments (paged), octree, occupancy grid.
pub struct Model {
    pub paging: Paging,
    pub params: Vec<wgpu::Buffer>,
    /// Per page, the hash tables' feature pairs that the field passes read: under mixed precision an
    /// f16 copy (HASH_PARAMS halves per node), in f32 the page's parameters themselves (the same
    /// buffer, read as vec2s: a node's block starts on a whole vec4).
    pub tables: Vec<wgpu::Buffer>,
    /// Whether `tables` holds the copy.
    pub half: bool,
    /// Hash-table floats per node (the copy's entries per node).
    pub hash_params: u32,
    pub tables_refresh_groups: Vec<wgpu::BindGroup>,
    pub grads: Vec<wgpu::Buffer>,
    /// Adam's first and second moments.
    pub m1: Vec<wgpu::Buffer>,
    pub m2: Vec<wgpu::Buffer>,
    /// Per page, one u32 per block of ADAM_BLOCK parameters: set by the backward where it adds a
    /// gradient, read and cleared by Adam.
    pub touched: Vec<wgpu::Buffer>,
    /// One `Page` uniform per page.
    pub pages: Vec<wgpu::Buffer>,
    pub scene: wgpu::Buffer,
    pub nodes: wgpu::Buffer,
    pub adam: wgpu::Buffer,
    /// The occupancy update's uniforms (the sampling passes have their own copy per workspace).
    pub sampling: wgpu::Buffer,
    pub occupancy: wgpu::Buffer,
    pub occupancy_mean: wgpu::Buffer,
    pub occ_cells: wgpu::Buffer,
    pub occ_groups: wgpu::Buffer,
    pub occ_group_base: wgpu::Buffer,
    /// Workgroups of each (phase, page) of the occupancy update.
    pub occ_group_counts: Vec<u32>,
    /// Loss statistics summed over steps (STATS_WORDS floats) and the sanitised-value counters.
    pub stats: wgpu::Buffer,
    pub sanitized: wgpu::Buffer,
    /// Counters read and cleared with the statistics: [0] the proposal's evaluated samples.
    pub counters: wgpu::Buffer,
    pub adam_block_groups: Vec<wgpu::BindGroup>,
    /// Per page, one bit per parameter: the sparse nodes' entries grad_norm has counted this step.
    pub visited: Vec<wgpu::Buffer>,
    /// The gradient statistics' partial sums (GRAD_SLOTS x GRAD_SLOT_WORDS), largest magnitudes and
    /// non-finite count.
    pub grad_partials: wgpu::Buffer,
    pub grad_max: wgpu::Buffer,
    /// The guard's settings and state (records::guard), and its passes' bind groups.
    pub guard_settings: wgpu::Buffer,
    pub guard: wgpu::Buffer,
    pub grad_guard_group: wgpu::BindGroup,
    pub grad_norm_block_groups: Vec<wgpu::BindGroup>,
    /// The parameter L2's partial sums, NORM_PARTIALS per page, and its bind group per page.
    pub norm_partials: wgpu::Buffer,
    pub param_norm_groups: Vec<wgpu::BindGroup>,
    pub occupancy_groups: Vec<wgpu::BindGroup>,
    pub occupancy_mean_group: wgpu::BindGroup,
}

impl Model {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        gpu: &Gpu,
        kernels: &Kernels,
        layout: &FieldLayout,
        octree: &Octree,
        params: &[f32],
        max_density: f32,
        occupancy_resolution: u32,
        field_workgroup: u32,
        max_buffer: u64,
        half: bool,
        loss_scale: f32,
    ) -> Result<Self> {
        let n_nodes = octree.nodes.len() as u32;
        let paging = Paging::new(n_nodes, layout.node_params, max_buffer)?;
        let page_floats = |p: u32| paging.params(p) as usize;
        let mut start = 0usize;
        let mut param_pages = Vec::new();
        for p in 0..paging.n_pages {
            let end = start + page_floats(p);
            param_pages.push(gpu.storage_init(&format!("parameters {p}"), bytemuck::cast_slice(&params[start..end]))?);
            start = end;
        }
        let zeroed = |label: &str| -> Result<Vec<wgpu::Buffer>> {
            (0..paging.n_pages).map(|p| gpu.storage(&format!("{label} {p}"), paging.params(p) * 4)).collect()
        };
        let pages: Vec<wgpu::Buffer> = (0..paging.n_pages)
            .map(|p| {
                let nodes = paging.nodes(p);
                let page = Page {
                    first_node: nodes.start,
                    n_nodes: nodes.len() as u32,
                    index: p,
                    n_params: paging.params(p) as u32,
                };
                gpu.uniform_init(&format!("page {p}"), &page)
            })
            .collect();
        let scene = Scene { max_density, n_nodes, n_pages: paging.n_pages, nodes_per_page: paging.nodes_per_page };
        let res = occupancy_resolution.max(1);
        let (cells, groups, base, counts) = occupancy_groups(octree, &paging, res, field_workgroup);
        let scene = gpu.uniform_init("scene", &scene);
        let nodes = gpu.storage_init("octree nodes", bytemuck::cast_slice(&octree.nodes))?;
        // in f32 the field passes read the hash tables' pairs from the parameters themselves
        let tables = (0..paging.n_pages)
            .map(|p| {
                if !half {
                    return Ok(param_pages[p as usize].clone());
                }
                let bytes = paging.nodes(p).len() as u64 * u64::from(layout.hash_params) * 2;
                gpu.storage(&format!("hash tables f16 {p}"), bytes.next_multiple_of(4))
            })
            .collect::<Result<Vec<_>>>()?;
        let tables_refresh_groups = (0..if half { paging.n_pages as usize } else { 0 })
            .map(|p| {
                kernels
                    .tables_refresh
                    .bind(gpu, &TablesRefreshBindings { page: &pages[p], params: &param_pages[p], tables: &tables[p] })
            })
            .collect();
        let grads = zeroed("gradients")?;
        let m1 = zeroed("adam first moments")?;
        let m2 = zeroed("adam second moments")?;
        let touched = (0..paging.n_pages)
            .map(|p| gpu.storage(&format!("touched blocks {p}"), paging.blocks(p) * 4))
            .collect::<Result<Vec<_>>>()?;
        let adam = gpu.uniform::<AdamUniforms>("adam");
        let sampling = gpu.uniform::<Sampling>("occupancy update");
        let occupancy = gpu.storage("occupancy grid", u64::from(res).pow(3) * 4)?;
        let occupancy_mean = gpu.storage("occupancy mean", 16)?;
        let occ_cells = gpu.storage_init("occupancy cells by node", bytemuck::cast_slice(&cells))?;
        let occ_groups = gpu.storage_init("occupancy groups", bytemuck::cast_slice(&groups))?;
        let occ_group_base = gpu.storage_init("occupancy group bases", bytemuck::cast_slice(&base))?;
        let stats = gpu.storage("loss statistics", (STATS_WORDS * 4) as u64)?;
        let sanitized = gpu.storage("sanitized counters", (SANITIZED_SLOTS.len() * 4) as u64)?;
        let counters = gpu.storage("counters", 16)?;
        let norm_partials = gpu.storage("parameter L2 partial sums", u64::from(paging.n_pages * NORM_PARTIALS) * 4)?;
        let param_norm_groups = (0..paging.n_pages as usize)
            .map(|p| {
                kernels.param_norm.bind(
                    gpu,
                    &ParamNormBindings { page: &pages[p], params: &param_pages[p], partials: &norm_partials },
                )
            })
            .collect();
        let visited = (0..paging.n_pages)
            .map(|p| gpu.storage(&format!("visited entries {p}"), paging.params(p).div_ceil(32) * 4))
            .collect::<Result<Vec<_>>>()?;
        let grad_partials = gpu.storage("gradient partial sums", u64::from(GRAD_SLOTS * GRAD_SLOT_WORDS) * 4)?;
        // the largest magnitude per tensor, then the count of non-finite entries
        let grad_max = gpu.storage("gradient largest magnitudes", (GRAD_TENSORS.len() as u64 + 1) * 4)?;
        let guard_settings = gpu.uniform::<GuardUniforms>("guard settings");
        let mut guard_init = vec![0.0f32; guard::WORDS as usize];
        guard_init[guard::SCALE as usize] = 1.0;
        guard_init[guard::LOSS_SCALE as usize] = if half { loss_scale } else { 1.0 };
        let guard = gpu.storage_init("guard", bytemuck::cast_slice(&guard_init))?;
        let grad_guard_group = kernels.grad_guard.bind(
            gpu,
            &GradGuardBindings {
                settings: &guard_settings,
                grad_partials: &grad_partials,
                grad_max: &grad_max,
                guard: &guard,
            },
        );
        let grad_norm_block_groups = (0..paging.n_pages as usize)
            .map(|p| {
                kernels.grad_norm_blocks.bind(
                    gpu,
                    &GradNormBlocksBindings {
                        page: &pages[p],
                        grads: &grads[p],
                        touched: &touched[p],
                        grad_partials: &grad_partials,
                        grad_max: &grad_max,
                    },
                )
            })
            .collect();
        let adam_block_groups = (0..paging.n_pages as usize)
            .map(|p| {
                kernels.adam_blocks.bind(
                    gpu,
                    &AdamBlocksBindings {
                        adam: &adam,
                        page: &pages[p],
                        params: &param_pages[p],
                        tables: &tables[p],
                        m1: &m1[p],
                        m2: &m2[p],
                        grads: &grads[p],
                        touched: &touched[p],
                        guard: &guard,
                        sanitized: &sanitized,
                    },
                )
            })
            .collect();
        let occupancy_groups = (0..paging.n_pages as usize)
            .map(|p| {
                kernels.occupancy.bind(
                    gpu,
                    &OccupancyBindings {
                        scene: &scene,
                        sampling: &sampling,
                        page: &pages[p],
                        nodes: &nodes,
                        params: &param_pages[p],
                        tables: &tables[p],
                        occ_cells: &occ_cells,
                        occ_groups: &occ_groups,
                        occ_group_base: &occ_group_base,
                        occupancy: &occupancy,
                        sanitized: &sanitized,
                    },
                )
            })
            .collect();
        let occupancy_mean_group = kernels.occupancy_mean.bind(
            gpu,
            &OccupancyMeanBindings { sampling: &sampling, occupancy: &occupancy, occupancy_mean: &occupancy_mean },
        );
        let model = Self {
            paging,
            params: param_pages,
            tables,
            half,
            hash_params: layout.hash_params,
            tables_refresh_groups,
            grads,
            m1,
            m2,
            touched,
            pages,
            scene,
            nodes,
            adam,
            sampling,
            occupancy,
            occupancy_mean,
            occ_cells,
            occ_groups,
            occ_group_base,
            occ_group_counts: counts,
            stats,
            sanitized,
            counters,
            adam_block_groups,
            visited,
            grad_partials,
            grad_max,
            guard_settings,
            guard,
            grad_guard_group,
            grad_norm_block_groups,
            norm_partials,
            param_norm_groups,
            occupancy_groups,
            occupancy_mean_group,
        };
        model.refresh_tables(gpu, kernels);
        Ok(model)
    }

    /// Mixed precision: makes the hash tables' f16 copy again from the parameters (after the host
    /// wrote them); nothing in f32.
    pub fn refresh_tables(&self, gpu: &Gpu, kernels: &Kernels) {
        if !self.half {
            return;
        }
        let mut rec = Recorder::new(gpu, "hash tables f16");
        for (p, group) in self.tables_refresh_groups.iter().enumerate() {
            let entries = self.paging.nodes(p as u32).len() as u32 * self.hash_params;
            rec.dispatch(&kernels.tables_refresh, group, entries);
        }
        rec.submit();
    }

    /// Writes every parameter (node after node) and the hash tables' f16 copy.
    pub fn write_params(&self, gpu: &Gpu, kernels: &Kernels, values: &[f32]) -> Result<()> {
        Self::write_paged(gpu, &self.params, &self.paging, values)?;
        self.refresh_tables(gpu, kernels);
        Ok(())
    }

    /// Flags every block of every page for Adam (as if each had a gradient; Adam still skips the
    /// entries whose gradient is zero).
    pub fn touch_all(&self, gpu: &Gpu) {
        for (p, page) in self.touched.iter().enumerate() {
            gpu.write(page, &vec![1u32; self.paging.blocks(p as u32) as usize]);
        }
    }

    /// Parameters in total.
    pub fn n_params(&self) -> u64 {
        u64::from(self.paging.n_nodes) * u64::from(self.paging.node_params)
    }

    /// Reads a paged per-parameter buffer (params, grads, m1 or m2) whole, node after node.
    pub fn read_paged(gpu: &Gpu, pages: &[wgpu::Buffer], paging: &Paging) -> Result<Vec<f32>> {
        let mut out = Vec::with_capacity((u64::from(paging.n_nodes) * u64::from(paging.node_params)) as usize);
        for (p, page) in pages.iter().enumerate() {
            out.extend(gpu.read::<f32>(page, paging.params(p as u32) as usize)?);
        }
        Ok(out)
    }

    /// Writes a whole paged buffer from `values` (node after node).
    pub fn write_paged(gpu: &Gpu, pages: &[wgpu::Buffer], paging: &Paging, values: &[f32]) -> Result<()> {
        let total = u64::from(paging.n_nodes) * u64::from(paging.node_params);
        if values.len() as u64 != total {
            bail!("expected {total} values, got {}", values.len());
        }
        let mut start = 0usize;
        for (p, page) in pages.iter().enumerate() {
            let end = start + paging.params(p as u32) as usize;
            gpu.write(page, &values[start..end]);
            start = end;
        }
        Ok(())
    }
}

/// The occupancy grid's cells listed for the node-batched update: for each phase (cell % OCC_PHASES)
/// the cells sorted by the deepest node holding them, cut into groups of at most `workgroup` cells of
/// one node. Returns the cells, the groups (node, first index into the cells, count, 0), the first
/// group of each (phase, page) followed by the number of groups, and each (phase, page)'s group
/// count. Config validation makes `res` a multiple of 2^max_depth, so each cell lies in one node.
pub fn occupancy_groups(
    octree: &Octree,
    paging: &Paging,
    res: u32,
    workgroup: u32,
) -> (Vec<u32>, Vec<[u32; 4]>, Vec<u32>, Vec<u32>) {
    let n_nodes = octree.nodes.len() as u32;
    let mut keyed: Vec<(u32, u32, u32)> = (0..res.pow(3))
        .map(|cell| {
            let c = [cell % res, (cell / res) % res, cell / (res * res)];
            let centre = c.map(|v| (v as f32 + 0.5) * (2.0 / res as f32) - 1.0);
            (cell % OCC_PHASES, octree.level_node(centre, 0.0, u32::MAX), cell)
        })
        .collect();
    keyed.sort_unstable();
    let cells: Vec<u32> = keyed.iter().map(|k| k.2).collect();
    let mut groups: Vec<[u32; 4]> = Vec::new();
    let mut base = vec![0u32; (OCC_PHASES * paging.n_pages) as usize];
    let mut counts = vec![0u32; base.len()];
    let mut i = 0usize;
    for phase in 0..OCC_PHASES {
        for page in 0..paging.n_pages {
            base[(phase * paging.n_pages + page) as usize] = groups.len() as u32;
            let nodes = paging.nodes(page);
            while i < keyed.len() && keyed[i].0 == phase && nodes.contains(&keyed[i].1) {
                let node = keyed[i].1;
                let start = i;
                while i < keyed.len() && keyed[i].0 == phase && keyed[i].1 == node && i - start < workgroup as usize {
                    i += 1;
                }
                groups.push([node, start as u32, (i - start) as u32, 0]);
                counts[(phase * paging.n_pages + page) as usize] += 1;
            }
        }
    }
    debug_assert_eq!(i, keyed.len(), "every cell lies in a node of some page ({n_nodes} nodes)");
    // the end of the last (phase, page): the kernel tells its own groups from a larger dispatch's extras
    base.push(groups.len() as u32);
    if groups.is_empty() {
        groups.push([0; 4]);
    }
    (cells, groups, base, counts)
}

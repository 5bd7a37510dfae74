//! A compute pass as a unit: `kernel!` declares a pass's WGSL file and its bindings once. From that
//! one declaration come the WGSL binding declarations (prepended to the pass's source, so the WGSL
//! file names its resources but never numbers them), the bind group layout, and a struct of named
//! buffers that `bind` turns into a bind group. Adding a pass is one WGSL file and one `kernel!`.

use crate::gpu::Gpu;
use anyhow::Result;
use std::time::Instant;

/// How a pass uses one binding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// `var<uniform>`
    Uniform,
    /// `var<storage, read>`
    Read,
    /// `var<storage, read_write>`
    ReadWrite,
    /// `var<storage, read_write>` of `atomic<u32>`
    Atomic,
    /// `var<storage, read_write>` of f32 added to atomically: `atomic<f32>` where the adapter has
    /// float atomics, else `atomic<u32>` with a compare-and-swap loop; the pass calls `NAME_add(i, v)`.
    FloatAtomic,
}

/// The WGSL spelling of a binding's Rust type: `[T]` is a runtime-sized array of T, any other type
/// a single value (uniforms).
pub trait BindingType {
    fn element_name() -> String;
    fn element_definition() -> Option<String>;
    fn is_array() -> bool;
}

impl<T: crate::gpu::layout::WgslType> BindingType for [T] {
    fn element_name() -> String {
        T::wgsl_name()
    }
    fn element_definition() -> Option<String> {
        T::wgsl_definition()
    }
    fn is_array() -> bool {
        true
    }
}

impl<T: crate::gpu::layout::GpuStruct> BindingType for T {
    fn element_name() -> String {
        T::wgsl_name()
    }
    fn element_definition() -> Option<String> {
        T::wgsl_definition()
    }
    fn is_array() -> bool {
        false
    }
}

/// One declared binding, as `kernel!` passes it to the source assembler.
#[derive(Clone, Debug)]
pub struct BindingDecl {
    pub access: Access,
    pub name: &'static str,
    pub element: String,
    pub definition: Option<String>,
    pub is_array: bool,
}

impl BindingDecl {
    /// `@group(0) @binding(i) var<...> name: type;` plus, for float atomics, the `NAME_add` helper.
    pub fn wgsl(&self, index: usize, float_atomics: bool) -> String {
        let (space, element) = match self.access {
            Access::Uniform => ("uniform", self.element.clone()),
            Access::Read => ("storage, read", self.element.clone()),
            Access::ReadWrite => ("storage, read_write", self.element.clone()),
            Access::Atomic => ("storage, read_write", format!("atomic<{}>", self.element)),
            Access::FloatAtomic if float_atomics => ("storage, read_write", "atomic<f32>".to_string()),
            Access::FloatAtomic => ("storage, read_write", "atomic<u32>".to_string()),
        };
        let ty = if self.is_array { format!("array<{element}>") } else { element };
        let mut text = format!("@group(0) @binding({index}) var<{space}> {}: {ty};\n", self.name);
        if self.access == Access::FloatAtomic {
            text.push_str(&float_add(self.name, float_atomics));
        }
        text
    }

    fn layout_entry(&self, index: usize) -> wgpu::BindGroupLayoutEntry {
        let ty = match self.access {
            Access::Uniform => wgpu::BufferBindingType::Uniform,
            Access::Read => wgpu::BufferBindingType::Storage { read_only: true },
            _ => wgpu::BufferBindingType::Storage { read_only: false },
        };
        wgpu::BindGroupLayoutEntry {
            binding: index as u32,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer { ty, has_dynamic_offset: false, min_binding_size: None },
            count: None,
        }
    }
}

/// `fn NAME_add(i, v)`: a native float atomic add, or a compare-and-swap loop on the bits.
fn float_add(name: &str, native: bool) -> String {
    if native {
        format!("fn {name}_add(i: u32, v: f32) {{\n    if v != 0.0 {{\n        atomicAdd(&{name}[i], v);\n    }}\n}}\n")
    } else {
        format!(
            "fn {name}_add(i: u32, v: f32) {{\n    if v == 0.0 {{\n        return;\n    }}\n    var old = atomicLoad(&{name}[i]);\n    loop {{\n        let swapped = atomicCompareExchangeWeak(&{name}[i], old, bitcast<u32>(bitcast<f32>(old) + v));\n        if swapped.exchanged {{\n            break;\n        }}\n        old = swapped.old_value;\n    }}\n}}\n"
        )
    }
}

/// A compiled pass.
pub struct Compiled {
    pub name: &'static str,
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
    /// Invocations per workgroup (the WGSL reads it as `WORKGROUP`).
    pub workgroup: u32,
}

impl Compiled {
    /// Compiles `source` with an explicit bind group layout made from the declared bindings.
    pub fn new(gpu: &Gpu, name: &'static str, source: &str, workgroup: u32, bindings: &[BindingDecl]) -> Result<Self> {
        let entries: Vec<wgpu::BindGroupLayoutEntry> =
            bindings.iter().enumerate().map(|(i, b)| b.layout_entry(i)).collect();
        let layout = gpu
            .device
            .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: Some(name), entries: &entries });
        let pipeline = gpu.compute_pipeline(name, source, &layout)?;
        Ok(Self { name, pipeline, layout, workgroup })
    }

    /// A bind group of `buffers`, in declaration order.
    pub fn bind(&self, gpu: &Gpu, buffers: &[&wgpu::Buffer]) -> wgpu::BindGroup {
        let entries: Vec<wgpu::BindGroupEntry> = buffers
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry { binding: i as u32, resource: b.as_entire_binding() })
            .collect();
        gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(self.name),
            layout: &self.layout,
            entries: &entries,
        })
    }
}

/// Declares one compute pass:
///
/// ```ignore
/// kernel! {
///     /// Adam over one page of parameters.
///     pub struct Adam, AdamBindings = "adam" {
///         includes: [],
///         workgroup: |_| 64,
///         bindings: {
///             adam: Uniform AdamUniforms,
///             params: ReadWrite [f32],
///         }
///     }
/// }
/// ```
///
/// makes `Adam` (compiled from `shaders/adam.wgsl`, `Adam::new(gpu, shape)`), `AdamBindings<'a>`
/// with one `&wgpu::Buffer` per binding, and `Adam::bind(gpu, &AdamBindings { .. })`.
#[macro_export]
macro_rules! kernel {
    (
        $(#[doc = $doc:expr])*
        pub struct $name:ident, $bindings:ident = $file:literal {
            includes: [$($include:ident),* $(,)?],
            workgroup: $workgroup:expr,
            bindings: { $( $(#[doc = $bdoc:expr])* $bname:ident : $access:ident $bty:ty ),* $(,)? }
        }
    ) => {
        /// The buffers of each binding, in the pass's terms.
        pub struct $bindings<'a> {
            $( $(#[doc = $bdoc])* pub $bname: &'a wgpu::Buffer ),*
        }

        $crate::kernel! {
            $(#[doc = $doc])*
            pub struct $name, use $bindings = $file {
                includes: [$($include),*],
                workgroup: $workgroup,
                bindings: { $( $bname : $access $bty ),* }
            }
        }
    };
    // A pass whose bindings are those of an earlier pass (its `$bindings` struct already declared):
    // passes of one family (e.g. the losses on rays) are bound alike.
    (
        $(#[doc = $doc:expr])*
        pub struct $name:ident, use $bindings:ident = $file:literal {
            includes: [$($include:ident),* $(,)?],
            workgroup: $workgroup:expr,
            bindings: { $( $(#[doc = $bdoc:expr])* $bname:ident : $access:ident $bty:ty ),* $(,)? }
        }
    ) => {
        $(#[doc = $doc])*
        pub struct $name(pub $crate::gpu::kernel::Compiled);

        impl $name {
            pub const NAME: &'static str = $file;

            /// The declared bindings, in binding order.
            pub fn declarations() -> Vec<$crate::gpu::kernel::BindingDecl> {
                vec![$(
                    $crate::gpu::kernel::BindingDecl {
                        access: $crate::gpu::kernel::Access::$access,
                        name: stringify!($bname),
                        element: <$bty as $crate::gpu::kernel::BindingType>::element_name(),
                        definition: <$bty as $crate::gpu::kernel::BindingType>::element_definition(),
                        is_array: <$bty as $crate::gpu::kernel::BindingType>::is_array(),
                    }
                ),*]
            }

            pub fn includes() -> Vec<$crate::gpu::shader::Include> {
                vec![$($crate::gpu::shader::Include::$include),*]
            }

            pub fn workgroup(shape: &$crate::gpu::shader::KernelShape) -> u32 {
                let size: fn(&$crate::gpu::shader::KernelShape) -> u32 = $workgroup;
                size(shape)
            }

            pub const BODY: &'static str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/shaders/", $file, ".wgsl"));

            /// The whole WGSL source of this pass for `shape`.
            pub fn source(shape: &$crate::gpu::shader::KernelShape) -> String {
                shape.assemble(&Self::includes(), Self::workgroup(shape), &Self::declarations(), Self::BODY)
            }

            pub fn new(gpu: &$crate::gpu::Gpu, shape: &$crate::gpu::shader::KernelShape) -> anyhow::Result<Self> {
                Ok(Self($crate::gpu::kernel::Compiled::new(
                    gpu,
                    $file,
                    &Self::source(shape),
                    Self::workgroup(shape),
                    &Self::declarations(),
                )?))
            }

            pub fn bind(&self, gpu: &$crate::gpu::Gpu, b: &$bindings) -> wgpu::BindGroup {
                self.0.bind(gpu, &[$(b.$bname),*])
            }
        }

        impl std::ops::Deref for $name {
            type Target = $crate::gpu::kernel::Compiled;
            fn deref(&self) -> &Self::Target {
                &self.0
            }
        }
    };
}

/// Records dispatches into a command encoder and counts them; in profiling mode each dispatch is
/// submitted alone and waited for, and its wall time added to its pass's total.
pub struct Recorder<'g> {
    gpu: &'g Gpu,
    encoder: Option<wgpu::CommandEncoder>,
    /// Dispatches recorded (indirect ones included).
    pub dispatches: u32,
    profile: Option<Vec<(&'static str, f64)>>,
}

impl<'g> Recorder<'g> {
    pub fn new(gpu: &'g Gpu, label: &str) -> Self {
        let encoder = gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(label) });
        Self { gpu, encoder: Some(encoder), dispatches: 0, profile: None }
    }

    /// A recorder that times every pass (slow: one submit and wait per dispatch).
    pub fn profiling(gpu: &'g Gpu, label: &str) -> Self {
        Self { profile: Some(Vec::new()), ..Self::new(gpu, label) }
    }

    pub fn encoder(&mut self) -> &mut wgpu::CommandEncoder {
        self.encoder.as_mut().expect("the recorder holds an encoder until finish")
    }

    /// `threads` invocations of `kernel` (rounded up to whole workgroups, split over x and y).
    pub fn dispatch(&mut self, kernel: &Compiled, group: &wgpu::BindGroup, threads: u32) {
        let (x, y) = crate::gpu::dispatch_size(threads, kernel.workgroup);
        self.dispatch_groups(kernel, group, x, y);
    }

    /// `x` by `y` workgroups of `kernel`.
    pub fn dispatch_groups(&mut self, kernel: &Compiled, group: &wgpu::BindGroup, x: u32, y: u32) {
        let started = self.begin_timing();
        {
            let mut pass = self
                .encoder()
                .begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some(kernel.name), timestamp_writes: None });
            pass.set_pipeline(&kernel.pipeline);
            pass.set_bind_group(0, group, &[]);
            pass.dispatch_workgroups(x, y, 1);
        }
        self.dispatches += 1;
        self.end_timing(kernel.name, started);
    }

    /// Workgroup counts read from `args` at `offset` (three u32: x, y, z).
    pub fn dispatch_indirect(&mut self, kernel: &Compiled, group: &wgpu::BindGroup, args: &wgpu::Buffer, offset: u64) {
        let started = self.begin_timing();
        {
            let mut pass = self
                .encoder()
                .begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some(kernel.name), timestamp_writes: None });
            pass.set_pipeline(&kernel.pipeline);
            pass.set_bind_group(0, group, &[]);
            pass.dispatch_workgroups_indirect(args, offset);
        }
        self.dispatches += 1;
        self.end_timing(kernel.name, started);
    }

    /// Zeroes `buffer` (not a dispatch).
    pub fn clear(&mut self, buffer: &wgpu::Buffer) {
        self.encoder().clear_buffer(buffer, 0, None);
    }

    fn begin_timing(&mut self) -> Option<Instant> {
        if self.profile.is_some() {
            // everything recorded before this pass runs first, untimed
            self.flush_and_wait();
            Some(Instant::now())
        } else {
            None
        }
    }

    fn end_timing(&mut self, name: &'static str, started: Option<Instant>) {
        if let Some(started) = started {
            self.flush_and_wait();
            let ms = started.elapsed().as_secs_f64() * 1e3;
            let profile = self.profile.as_mut().expect("profiling");
            match profile.iter_mut().find(|(n, _)| *n == name) {
                Some(entry) => entry.1 += ms,
                None => profile.push((name, ms)),
            }
        }
    }

    fn flush_and_wait(&mut self) {
        let encoder = self.encoder.take().expect("encoder");
        self.gpu.queue.submit([encoder.finish()]);
        let _ = self.gpu.wait();
        self.encoder =
            Some(self.gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("profiled") }));
    }

    /// Submits what was recorded; returns the submission (to wait on) and, when profiling,
    /// milliseconds per pass.
    pub fn submit(mut self) -> (wgpu::SubmissionIndex, Option<Vec<(&'static str, f64)>>) {
        let encoder = self.encoder.take().expect("encoder");
        let index = self.gpu.queue.submit([encoder.finish()]);
        (index, self.profile.take())
    }
}

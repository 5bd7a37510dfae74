//! Every pass (the trainer's and `infnerf bench`'s copy) parses and validates with naga for several
//! field shapes, both float-atomic modes and both places the decoder weights are read from; every
//! shaders/*.wgsl file is a pass or an include; and every struct a pass binds has, in naga's layout,
//! the size and field offsets of its Rust twin (`gpu_struct!`).

use infnerf::bench::CopyKernel;
use infnerf::config::Config;
use infnerf::field::FieldLayout;
use infnerf::gpu::layout::GpuStruct;
use infnerf::gpu::records::{
    AdamUniforms, Batch, DenseAdam, GpuCamera, GuardUniforms, LossUniforms, NetBatch, NetStage, Page, Patch,
    PatchNetUniforms, Ray, RayGrad, RayOutput, Sample, Sampling, Scene,
};
use infnerf::gpu::shader::KernelShape;
use infnerf::gpu::unrolled::WeightSource;
use infnerf::kernels::Kernels;
use infnerf::octree::Node;

/// Workgroup memory of the shapes (32 KiB: most desktop GPUs and lavapipe).
const WORKGROUP_STORAGE: u32 = 32 * 1024;

fn validate(source: &str, name: &str) -> naga::Module {
    let module =
        naga::front::wgsl::parse_str(source).unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(source)));
    naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all())
        .validate(&module)
        .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(source)));
    module
}

/// Default, tiny, and a wide field (64 hidden, 16 hash levels, SH degree 4).
fn configs() -> Vec<(&'static str, Config)> {
    let mut wide = Config::default();
    wide.field.hidden_width = 64;
    wide.field.hash_levels = 16;
    wide.field.sh_degree = 4;
    vec![("default", Config::default()), ("tiny", Config::tiny()), ("wide", wide)]
}

/// Every kernel shape the tests cover: each config with both atomic modes and both weight sources,
/// and in mixed precision.
fn shapes() -> Vec<(String, KernelShape)> {
    let mut shapes = Vec::new();
    for (name, config) in configs() {
        for float_atomics in [true, false] {
            for weights in [WeightSource::Workgroup, WeightSource::Storage] {
                let shape =
                    KernelShape::new(FieldLayout::new(&config.field), float_atomics, WORKGROUP_STORAGE, weights);
                assert!(shape.fits(WORKGROUP_STORAGE), "{name} {weights:?}: the field passes' workgroup memory");
                shapes.push((format!("{name}, float atomics {float_atomics}, weights {weights:?}"), shape));
            }
        }
        // mixed precision, with stored activations and a step in chunks
        let mut half =
            KernelShape::new(FieldLayout::new(&config.field), true, WORKGROUP_STORAGE, WeightSource::Workgroup);
        half.half = true;
        half.store_activations = true;
        half.flag_blocks = true;
        shapes.push((format!("{name}, mixed precision, stored activations, chunks"), half));
    }
    shapes
}

/// Every pass of `shape`: the trainer's and the bandwidth reference of `infnerf bench`.
fn sources(shape: &KernelShape) -> Vec<(&'static str, String)> {
    let mut sources = Kernels::sources(shape);
    sources.push((CopyKernel::NAME, CopyKernel::source(shape)));
    sources
}

/// A validated pass: its shape's label, its name, its module.
struct Validated {
    label: String,
    pass: &'static str,
    module: naga::Module,
}

/// Every pass of every shape, validated once for all tests.
fn modules() -> &'static [Validated] {
    static MODULES: std::sync::OnceLock<Vec<Validated>> = std::sync::OnceLock::new();
    MODULES.get_or_init(|| {
        let mut modules = Vec::new();
        for (label, shape) in shapes() {
            for (pass, source) in sources(&shape) {
                let module = validate(&source, &format!("{pass} ({label})"));
                modules.push(Validated { label: label.clone(), pass, module });
            }
        }
        modules
    })
}

/// Shared WGSL that passes include (src/gpu/shader.rs), not passes of their own.
const INCLUDES: [&str; 9] =
    ["common", "octree", "place_sample", "field", "node_groups", "hash_grid", "adam_update", "ray_loss", "grad_stats"];

#[test]
fn every_pass_validates_for_several_shapes() {
    let modules = modules();
    assert_eq!(modules.len(), shapes().len() * sources(&shapes()[0].1).len());
    for Validated { label, pass, module } in modules {
        // the pipelines are created with entry point `main`
        let entries: Vec<&str> = module.entry_points.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(entries, ["main"], "{pass} ({label})");
    }
}

#[test]
fn every_wgsl_file_is_a_pass_or_an_include() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wgsl"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .filter(|stem| !INCLUDES.contains(&stem.as_str()))
        .collect();
    files.sort();
    let shape = &shapes()[0].1;
    let mut passes: Vec<String> = sources(shape).into_iter().map(|(name, _)| name.to_string()).collect();
    passes.sort();
    assert_eq!(passes, files, "a shaders/*.wgsl file that no kernel! declares is never validated");
}

/// A host struct's layout: name, size, (field, offset) in Rust.
struct HostLayout {
    name: String,
    size: usize,
    offsets: Vec<(&'static str, usize)>,
}

fn host<T: GpuStruct>() -> HostLayout {
    HostLayout { name: T::wgsl_name(), size: std::mem::size_of::<T>(), offsets: T::host_offsets() }
}

/// Every `gpu_struct!` type (a struct a pass binds and this list lacks fails
/// `every_bound_struct_is_checked`).
fn host_structs() -> Vec<HostLayout> {
    vec![
        host::<Batch>(),
        host::<Sampling>(),
        host::<Scene>(),
        host::<Page>(),
        host::<AdamUniforms>(),
        host::<LossUniforms>(),
        host::<GuardUniforms>(),
        host::<Ray>(),
        host::<Sample>(),
        host::<RayOutput>(),
        host::<RayGrad>(),
        host::<GpuCamera>(),
        host::<Patch>(),
        host::<Node>(),
        host::<NetBatch>(),
        host::<NetStage>(),
        host::<PatchNetUniforms>(),
        host::<DenseAdam>(),
    ]
}

/// A struct as naga lays it out: name, size, (member, offset) in order.
struct WgslStruct {
    name: String,
    span: u32,
    members: Vec<(String, u32)>,
}

/// The named structs a module declares (naga's own result types, `__...`, left out).
fn wgsl_structs(module: &naga::Module) -> Vec<WgslStruct> {
    module
        .types
        .iter()
        .filter_map(|(_, ty)| match (&ty.name, &ty.inner) {
            (Some(name), naga::TypeInner::Struct { members, span }) if !name.starts_with("__") => {
                let members = members.iter().map(|m| (m.name.clone().unwrap_or_default(), m.offset)).collect();
                Some(WgslStruct { name: name.clone(), span: *span, members })
            }
            _ => None,
        })
        .collect()
}

/// Compares one WGSL struct with its host twin: field names in order, every field's offset, size.
fn compare(host: &HostLayout, wgsl: &WgslStruct, context: &str) {
    let (span, members) = (wgsl.span, &wgsl.members);
    let name = &host.name;
    let wgsl_names: Vec<&str> = members.iter().map(|(n, _)| n.as_str()).collect();
    let host_names: Vec<&str> = host.offsets.iter().map(|(n, _)| *n).collect();
    assert_eq!(wgsl_names, host_names, "{name} in {context}: fields");
    for ((field, wgsl), (_, rust)) in members.iter().zip(&host.offsets) {
        assert_eq!(*wgsl as usize, *rust, "{name}.{field} in {context}: WGSL offset {wgsl}, Rust offset {rust}");
    }
    assert_eq!(span as usize, host.size, "{name} in {context}: WGSL size {span}, Rust size {}", host.size);
}

#[test]
fn host_structs_match_wgsl_layouts() {
    let hosts = host_structs();
    let mut seen = vec![0usize; hosts.len()];
    for Validated { label, pass, module } in modules() {
        for wgsl in wgsl_structs(module) {
            if let Some(i) = hosts.iter().position(|h| h.name == wgsl.name) {
                compare(&hosts[i], &wgsl, &format!("{pass} ({label})"));
                seen[i] += 1;
            }
        }
    }
    for (host, seen) in hosts.iter().zip(seen) {
        assert!(seen > 0, "{}: no pass declares it (a stale entry in host_structs?)", host.name);
    }
}

/// The names of the structs a module's bindings hold (directly, as array elements or as members).
fn bound_structs(module: &naga::Module) -> Vec<String> {
    fn visit(module: &naga::Module, ty: naga::Handle<naga::Type>, out: &mut Vec<String>) {
        let ty = &module.types[ty];
        match &ty.inner {
            naga::TypeInner::Struct { members, .. } => {
                if let Some(name) = &ty.name {
                    if !out.contains(name) {
                        out.push(name.clone());
                    }
                }
                for member in members {
                    visit(module, member.ty, out);
                }
            }
            naga::TypeInner::Array { base, .. } | naga::TypeInner::BindingArray { base, .. } => {
                visit(module, *base, out)
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    for (_, global) in module.global_variables.iter().filter(|(_, g)| g.binding.is_some()) {
        visit(module, global.ty, &mut out);
    }
    out
}

#[test]
fn every_bound_struct_is_checked() {
    let checked: Vec<String> = host_structs().into_iter().map(|h| h.name).collect();
    let mut bound = Vec::new();
    for Validated { label, pass, module } in modules() {
        for name in bound_structs(module) {
            assert!(checked.contains(&name), "{pass} ({label}) binds struct {name}: add it to host_structs");
            if !bound.contains(&name) {
                bound.push(name);
            }
        }
    }
    // and the list holds nothing that no pass binds
    for name in &checked {
        assert!(bound.contains(name), "{name} is in host_structs but no pass binds it");
    }
}

/// The comparison catches a drift: a struct whose Rust offsets differ from the WGSL ones (a vec3
/// followed by a vec3, which WGSL aligns to 16 bytes and `#[repr(C)]` packs to 12) fails it.
#[test]
#[should_panic(expected = "WGSL offset 16, Rust offset 12")]
fn layout_comparison_catches_a_vec3_misalignment() {
    infnerf::gpu_struct! {
        /// Two vec3s: WGSL puts `b` at 16, Rust at 12.
        pub struct Drifted {
            pub a: [f32; 3],
            pub b: [f32; 3],
            pub c: f32,
        }
    }
    use infnerf::gpu::layout::WgslType;
    let source = format!(
        "{}@group(0) @binding(0) var<storage, read_write> d: array<Drifted>;\n@compute @workgroup_size(1)\nfn main() {{ d[0].c = 1.0; }}\n",
        Drifted::wgsl_definition().unwrap()
    );
    let module = validate(&source, "drifted");
    let drifted = wgsl_structs(&module).into_iter().find(|s| s.name == "Drifted").unwrap();
    compare(&host::<Drifted>(), &drifted, "test");
}

//! The contract between the embedded eBPF object and `syscope_common`,
//! checked on the object itself without privileges: every map of the
//! catalogue with its type and sizes, the internal maps, every load-time
//! global and every program (on its hook). A mismatch here would otherwise
//! surface only at load time, as root, on a real kernel.

use std::collections::BTreeSet;

use aya_obj::{generated::bpf_map_type, Object, ProgramSection};
use object::{Object as _, ObjectSection as _, ObjectSymbol as _};
use syscope_common::{
    counter, globals,
    maps::{MapKind, MAPS, THREADS_SEEN_DEFAULT_ENTRIES},
    names, Histogram, SlotRef,
};

use super::slots::BPF_F_MMAPABLE;

fn parsed() -> Object {
    Object::parse(super::OBJECT).expect("aya-obj parses the embedded eBPF object")
}

/// Global symbols of the ELF object with the name of their section.
fn symbols() -> Vec<(String, String)> {
    let elf = object::File::parse(super::OBJECT).expect("the embedded object is ELF");
    elf.symbols()
        .filter(|s| s.is_global() && s.is_definition())
        .filter_map(|s| {
            let section = elf.section_by_index(s.section_index()?).ok()?;
            Some((s.name().ok()?.to_string(), section.name().ok()?.to_string()))
        })
        .collect()
}

fn section_of(name: &str) -> Option<String> {
    symbols()
        .into_iter()
        .find(|(s, _)| s == name)
        .map(|(_, sec)| sec)
}

#[test]
fn catalogue_maps_are_in_the_object_as_described() {
    let obj = parsed();
    for m in &MAPS {
        let om = obj
            .maps
            .get(m.object)
            .unwrap_or_else(|| panic!("map {} (`{}`) missing from the object", m.object, m.label));
        let want_type = match m.kind {
            MapKind::Hash | MapKind::Slots { .. } => bpf_map_type::BPF_MAP_TYPE_HASH,
            MapKind::LruHash => bpf_map_type::BPF_MAP_TYPE_LRU_HASH,
        } as u32;
        assert_eq!(om.map_type(), want_type, "{}: map type", m.object);
        assert_eq!(om.key_size(), m.key_size, "{}: key size", m.object);
        let value = match m.kind {
            MapKind::Slots { .. } => size_of::<SlotRef>() as u32,
            _ => m.value_size,
        };
        assert_eq!(om.value_size(), value, "{}: value size", m.object);
        assert_eq!(
            om.max_entries(),
            m.default_entries,
            "{}: max_entries",
            m.object
        );
        if let MapKind::Slots { values, gens, free } = m.kind {
            for (name, ty, key, value, flags) in [
                (
                    values,
                    bpf_map_type::BPF_MAP_TYPE_ARRAY,
                    4,
                    m.value_size,
                    BPF_F_MMAPABLE,
                ),
                (gens, bpf_map_type::BPF_MAP_TYPE_ARRAY, 4, 4, 0),
                (free, bpf_map_type::BPF_MAP_TYPE_QUEUE, 0, 4, 0),
            ] {
                let om = obj
                    .maps
                    .get(name)
                    .unwrap_or_else(|| panic!("map {name} (of `{}`) missing", m.label));
                assert_eq!(om.map_type(), ty as u32, "{name}: map type");
                assert_eq!(om.key_size(), key, "{name}: key size");
                assert_eq!(om.value_size(), value, "{name}: value size");
                assert_eq!(om.map_flags(), flags, "{name}: flags");
                assert_eq!(om.max_entries(), m.default_entries, "{name}: max_entries");
            }
        }
    }
}

#[test]
fn internal_maps_are_in_the_object_as_described() {
    let obj = parsed();
    let check = |name: &str, ty: bpf_map_type, value: usize, entries: u32| {
        let om = obj
            .maps
            .get(name)
            .unwrap_or_else(|| panic!("map {name} missing from the object"));
        assert_eq!(om.map_type(), ty as u32, "{name}: map type");
        assert_eq!(om.key_size(), 4, "{name}: key size");
        assert_eq!(om.value_size() as usize, value, "{name}: value size");
        assert_eq!(om.max_entries(), entries, "{name}: max_entries");
    };
    check(
        names::COUNTERS_MAP,
        bpf_map_type::BPF_MAP_TYPE_PERCPU_ARRAY,
        8,
        counter::COUNT,
    );
    check(
        names::FOLDED_HIST_MAP,
        bpf_map_type::BPF_MAP_TYPE_ARRAY,
        std::mem::size_of::<Histogram>(),
        syscope_common::fold::HIST_SLOTS,
    );
    check(
        names::FOLDED_COUNTS_MAP,
        bpf_map_type::BPF_MAP_TYPE_ARRAY,
        8,
        syscope_common::fold::COUNT_SLOTS,
    );
    check(
        names::THREADS_SEEN_MAP,
        bpf_map_type::BPF_MAP_TYPE_ARRAY,
        8,
        THREADS_SEEN_DEFAULT_ENTRIES,
    );
    check(
        names::SOCKS_LIVE_MAP,
        bpf_map_type::BPF_MAP_TYPE_ARRAY,
        8,
        1,
    );
    let om = obj
        .maps
        .get(names::LISTEN_PORTS_MAP)
        .expect("LISTEN_PORTS in the object");
    assert_eq!(om.map_type(), bpf_map_type::BPF_MAP_TYPE_HASH as u32);
    assert_eq!((om.key_size(), om.value_size()), (4, 4));
    assert_eq!(om.max_entries(), names::LISTEN_PORTS_ENTRIES);
    check(
        names::RENAME_EPOCH_MAP,
        bpf_map_type::BPF_MAP_TYPE_ARRAY,
        4,
        1,
    );
    check(names::SELECTION_MAP, bpf_map_type::BPF_MAP_TYPE_ARRAY, 4, 2);
    check(
        names::RENAMED_MAP,
        bpf_map_type::BPF_MAP_TYPE_LRU_HASH,
        syscope_common::COMM_LEN,
        names::RENAMED_ENTRIES,
    );
    let rb = obj
        .maps
        .get(names::CGROUP_EVENTS_MAP)
        .expect("cgroup event ring buffer in the object");
    assert_eq!(rb.map_type(), bpf_map_type::BPF_MAP_TYPE_RINGBUF as u32);
    assert_eq!(rb.max_entries(), names::CGROUP_EVENTS_BYTES);
    // Nothing else, apart from the data sections of the globals.
    let known: BTreeSet<&str> = MAPS
        .iter()
        .flat_map(|m| match m.kind {
            MapKind::Slots { values, gens, free } => vec![m.object, values, gens, free],
            _ => vec![m.object],
        })
        .chain([
            names::COUNTERS_MAP,
            names::FOLDED_HIST_MAP,
            names::FOLDED_COUNTS_MAP,
            names::SOCKS_LIVE_MAP,
            names::THREADS_SEEN_MAP,
            names::LISTEN_PORTS_MAP,
            names::RENAME_EPOCH_MAP,
            names::SELECTION_MAP,
            names::RENAMED_MAP,
            names::CGROUP_EVENTS_MAP,
            // The benchmark's reference design (one entry unless it runs) and
            // clock floor.
            names::REF_THREADS_MAP,
            names::REF_HIST_MAP,
            names::CLOCK_FLOOR_MAP,
        ])
        .collect();
    for name in obj.maps.keys() {
        assert!(
            known.contains(name.as_str()) || name.starts_with('.'),
            "map {name} in the object is not described in syscope_common"
        );
    }
}

#[test]
fn globals_are_exactly_the_objects_read_only_data() {
    let in_rodata: BTreeSet<String> = symbols()
        .into_iter()
        .filter(|(_, sec)| sec.starts_with(".rodata"))
        .map(|(name, _)| name)
        .collect();
    let want: BTreeSet<String> = globals::ALL.iter().map(|g| g.to_string()).collect();
    assert_eq!(want.len(), globals::ALL.len(), "a global listed twice");
    let missing: Vec<_> = want.difference(&in_rodata).collect();
    assert!(
        missing.is_empty(),
        "globals missing from .rodata: {missing:?}"
    );
    let unknown: Vec<_> = in_rodata.difference(&want).collect();
    assert!(
        unknown.is_empty(),
        "read-only globals not in syscope_common::globals::ALL: {unknown:?}"
    );
}

#[test]
fn programs_are_in_the_object_on_their_hooks() {
    let obj = parsed();
    let btf = |hook: &str| format!("tp_btf/{hook}");
    let mut want: Vec<(&str, String)> = vec![
        (names::BTF_ENTER, btf("sys_enter")),
        (names::BTF_EXIT, btf("sys_exit")),
        (names::TP_ENTER, "tracepoint/raw_syscalls/sys_enter".into()),
        (names::TP_EXIT, "tracepoint/raw_syscalls/sys_exit".into()),
        (names::BTF_THREAD_EXIT, btf("sched_process_exit")),
        (
            names::TP_THREAD_EXIT,
            "tracepoint/sched/sched_process_exit".into(),
        ),
        (names::TCP_RETRANSMIT.0, btf(names::TCP_RETRANSMIT.1)),
        (names::TCP_RETRANSMIT_OLD, btf(names::TCP_RETRANSMIT.1)),
        (names::LISTEN_POLL, "raw_tp".into()),
        (names::SEED_TCP, "iter/tcp".into()),
        (names::BTF_RENAME, btf("task_rename")),
        (names::BTF_EXEC, btf("sched_process_exec")),
        (names::BTF_CGROUP_MKDIR, btf("cgroup_mkdir")),
    ];
    want.extend(names::TCP_PROGRAMS.iter().map(|(p, h)| (*p, btf(h))));
    // The benchmark's yardsticks, on the hooks the loader attaches them to.
    want.extend(
        <super::BenchPrograms as clap::ValueEnum>::value_variants()
            .iter()
            .flat_map(|b| b.programs())
            .map(|(p, h)| (p, btf(h))),
    );
    for (name, section) in &want {
        let p = obj
            .programs
            .get(*name)
            .unwrap_or_else(|| panic!("program {name} missing from the object"));
        let kind_ok = match section.split('/').next() {
            Some("tp_btf") => matches!(p.section, ProgramSection::BtfTracePoint),
            Some("tracepoint") => matches!(p.section, ProgramSection::TracePoint),
            Some("raw_tp") => matches!(p.section, ProgramSection::RawTracePoint),
            Some("iter") => matches!(p.section, ProgramSection::Iter { .. }),
            _ => false,
        };
        assert!(kind_ok, "{name}: program type {:?}", p.section);
        assert_eq!(
            section_of(name).as_deref(),
            Some(section.as_str()),
            "{name}: hook"
        );
    }
    let listed: BTreeSet<&str> = want.iter().map(|(n, _)| *n).collect();
    for name in obj.programs.keys() {
        assert!(
            listed.contains(name.as_str()),
            "program {name} in the object is not in syscope_common::names"
        );
    }
}

/// The task storage object is the same programs and maps, plus the task
/// and socket storage maps, defined in BTF as the kernel needs them.
#[test]
fn task_storage_object_differs_only_in_local_storage() {
    let lru = parsed();
    let ts = Object::parse(super::OBJECT_TASK_STORAGE)
        .expect("aya-obj parses the embedded task storage object");
    let progs = |o: &Object| o.programs.keys().cloned().collect::<BTreeSet<_>>();
    assert_eq!(progs(&lru), progs(&ts));
    let maps = |o: &Object| {
        o.maps
            .keys()
            .filter(|n| !n.starts_with('.'))
            .cloned()
            .collect::<BTreeSet<_>>()
    };
    let mut want = maps(&lru);
    want.insert("TASK_STATE".to_string());
    want.insert("SOCK_STATE".to_string());
    assert_eq!(maps(&ts), want);
    for (name, ty, value) in [
        (
            "TASK_STATE",
            bpf_map_type::BPF_MAP_TYPE_TASK_STORAGE,
            std::mem::size_of::<syscope_common::ThreadState>(),
        ),
        (
            "SOCK_STATE",
            bpf_map_type::BPF_MAP_TYPE_SK_STORAGE,
            std::mem::size_of::<syscope_common::tcp::SockState>(),
        ),
    ] {
        let m = &ts.maps[name];
        assert_eq!(m.map_type(), ty as u32, "{name}");
        assert_eq!(m.key_size(), 4, "{name}");
        assert_eq!(m.value_size() as usize, value, "{name}");
        assert_eq!(m.max_entries(), 0, "{name}");
    }
}

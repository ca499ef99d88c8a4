#!/usr/bin/env bash
# Builds the CUDA binaries HERE (a Debian 12 dev machine with the CUDA 13.0 toolkit and our
# Debian packages) and packs them for the GPU machine, whose image has CUDA 13.0, cuBLAS and
# PyTorch's NCCL but none of our Debian dependencies (Open MPI, OpenBLAS, UCX, spdlog, ...).
# Nothing is built there; bench/device/run.sh only unpacks and runs.
#
# Writes (all git-ignored):
#   build-device/            Release, CUDA ON, sm_90a SASS + compute_90 PTX
#   .device/                 the unpacked pack, used here to verify it:
#     bin/                   test_cuda_backend_ops test_cuda_e2e test_cuda_parallel bench_gpu
#                            parafuse (stripped)
#     lib/                   the non-glibc, non-CUDA shared-library closure (OpenBLAS, Open MPI,
#                            UCX, spdlog, fmt, hwloc, libevent, PMIx, gfortran, ...) by soname
#     lib/fallback/          libstdc++ and libgcc_s: put on the path by run.sh only if the
#                            machine's own are older than what the binaries need
#     mpi/                   relocated Open MPI 4.1 prefix: bin/ (mpirun, orted),
#                            lib/openmpi3/ (the MCA components that work on one node without
#                            InfiniBand), lib/pmix/, share/openmpi/ (help texts), etc/
#     env.sh                 sourced by run.sh: library path, OPAL_*/PMIX_* relocation, MCA
#     BUILD_ROOT             this checkout's path: the tests have it compiled in (test data,
#                            model cache), so run.sh links it to the checkout there
#   .device-pack/            what a device call carries: parafuse-device.tar.xz (.device,
#                            xz-compressed: OpenBLAS alone is 35 MiB raw, 4 MiB packed) + SHA256
#   .device-model-a/, .device-model-b/
#                            the SmolLM2 GGUF (94 MiB, over the 64 MiB a call carries) in two
#                            parts, each with SHA256SUMS of the parts and the whole file
#
# Then it checks, in a clean environment, that `mpirun -np 2 test_cuda_parallel` runs from the
# pack and loads no non-glibc library or MCA component from this machine's /usr (LD_DEBUG), and
# prints the highest GLIBC symbol version the pack needs.
#
# Usage, from anywhere in the checkout:  bash bench/device/pack.sh
#   PF_PACK_JOBS=2 (ninja -j), PF_PACK_SKIP_BUILD=1 (pack what build-device/ has),
#   PF_PACK_VERIFY=0 (skip the mpirun check)
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 2
ROOT=$PWD
BUILD=build-device
DEV=.device
JOBS=${PF_PACK_JOBS:-2}
TARGETS=(test_cuda_backend_ops test_cuda_e2e test_cuda_parallel bench_gpu parafuse)
MODEL=.cache/models/SmolLM2-135M-Instruct.Q4_1.gguf
MULTIARCH=/usr/lib/x86_64-linux-gnu
OMPI_PKGLIB=$MULTIARCH/openmpi/lib/openmpi3
PMIX_PKGLIB=$MULTIARCH/pmix2/lib/pmix

die() { echo "pack: $*" >&2; exit 1; }
say() { echo "== $*"; }

# glibc's own libraries come from the machine (they must match its ld.so); CUDA's (runtime,
# cuBLAS, NCCL, driver) come from the image, which has the same CUDA 13.0.
GLIBC_RE='^(linux-vdso|ld-linux-x86-64|libc|libm|libmvec|libpthread|libdl|librt|libresolv|libutil|libanl|libnsl|libcrypt)\.so'
CUDA_RE='^lib(cuda|cudart|cublas|cublasLt|nccl|nvidia-ml|nvrtc|nvJitLink)\.so'
# Old-enough GCC runtime that a newer machine's copy is a superset; shipped as a fallback only.
GCCRT_RE='^lib(stdc\+\+|gcc_s)\.so'

# ---------------------------------------------------------------- build
if [ "${PF_PACK_SKIP_BUILD:-0}" != 1 ]; then
  say "configure $BUILD"
  # 90a-real;90-virtual = sm_90a SASS + compute_90 PTX (the CMakeLists default, spelled out).
  cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DPARAFUSE_CUDA=ON \
    '-DCMAKE_CUDA_ARCHITECTURES=90a-real;90-virtual' > /dev/null || die "cmake configure failed"
  say "build ${TARGETS[*]} (ninja -j$JOBS)"
  nice ninja -C "$BUILD" -j "$JOBS" "${TARGETS[@]}" || die "build failed"
fi

# Where each target's executable is (the launcher puts parafuse at the build root).
declare -A EXE
for t in "${TARGETS[@]}"; do
  f=$(find "$BUILD" -path "$BUILD/CMakeFiles" -prune -o -type f -name "$t" -perm -u+x -print | head -1)
  [ -n "$f" ] || die "no executable for target $t under $BUILD"
  EXE[$t]=$f
done

# ---------------------------------------------------------------- assemble .device
say "assemble $DEV"
rm -rf "$DEV" .device-pack
mkdir -p "$DEV"/{bin,lib/fallback,mpi/bin,mpi/lib/openmpi3,mpi/lib/pmix,mpi/share,mpi/etc}
for t in "${TARGETS[@]}"; do cp "${EXE[$t]}" "$DEV/bin/$t"; done
for t in mpirun orted; do cp "$(readlink -f "$(command -v $t)")" "$DEV/mpi/bin/$t"; done
ln -s mpirun "$DEV/mpi/bin/orterun"
ln -s mpirun "$DEV/mpi/bin/mpiexec"

# MCA components: keep those whose extra libraries (beyond what the binaries and mpirun need
# anyway) are in ALLOWED_EXTRA. That drops InfiniBand/OFI/PSM (verbs, libfabric: not there,
# and large), UCX PML/OSC (we run ob1 over shared memory), OpenSHMEM, MPI-IO and monitoring,
# none of which a one-node run uses; a dropped component is one Open MPI would otherwise try to
# open and warn about.
ALLOWED_EXTRA='^lib(mca_common_sm\.so|pmix\.so|munge\.so)'
core_libs=$( { for f in "$DEV"/bin/* "$DEV"/mpi/bin/mpirun "$DEV"/mpi/bin/orted; do ldd "$f"; done; } |
             awk '/=>/{print $1}' | sort -u)
kept=() dropped=()
for c in "$OMPI_PKGLIB"/mca_*.so; do
  extra=$(ldd "$c" | awk '/=>/{print $1}' | sort -u | grep -vxF "$core_libs" | grep -vE "$ALLOWED_EXTRA")
  if [ -z "$extra" ]; then cp "$c" "$DEV/mpi/lib/openmpi3/"; kept+=("$(basename "$c" .so)")
  else dropped+=("$(basename "$c" .so)"); fi
done
echo "MCA components kept: ${#kept[@]}, dropped: ${#dropped[@]} (${dropped[*]#mca_})"
# PMIx 4's own plugins (zlib compression, resource-manager glue); tiny.
cp "$PMIX_PKGLIB"/*.so "$DEV/mpi/lib/pmix/"
cp -r /usr/share/openmpi "$DEV/mpi/share/openmpi"
rm -f "$DEV"/mpi/share/openmpi/*wrapper-data.txt  # compiler wrappers: not shipped
mkdir -p "$DEV/mpi/share/pmix" && cp "$MULTIARCH"/pmix2/share/pmix/help-*.txt "$DEV/mpi/share/pmix/"
# Debian's site defaults (its /etc/openmpi is absolute, so we point OPAL_SYSCONFDIR here).
cp /etc/openmpi/openmpi-mca-params.conf "$DEV/mpi/etc/" 2>/dev/null || true
# UCX's shared-memory (CMA) module: small, glibc + UCX only; IB/RDMA modules are left out.
mkdir -p "$DEV/lib/ucx" && cp -L "$MULTIARCH"/ucx/libuct_cma.so.0 "$DEV/lib/ucx/"

# The shared-library closure of everything above, by the name each ELF asks for (ldd's left
# column: e.g. libopenblas.so.0, which Debian resolves through openblas-pthread/ alternatives;
# cp -L lands the real file under that name).
closure() {
  find "$DEV/bin" "$DEV/mpi/bin" "$DEV/mpi/lib" "$DEV/lib/ucx" -type f -print0 |
    xargs -0 -n1 ldd 2>/dev/null | awk '/=>/ && $3 ~ /^\// {print $1, $3}' | sort -u
}
missing=$(find "$DEV/bin" "$DEV/mpi/bin" "$DEV/mpi/lib" "$DEV/lib/ucx" -type f -print0 |
          xargs -0 -n1 ldd 2>/dev/null | grep 'not found' | sort -u)
[ -z "$missing" ] || die "unresolved libraries here: $missing"
while read -r name path; do
  if [[ $name =~ $GLIBC_RE || $name =~ $CUDA_RE ]]; then continue; fi
  if [[ $name =~ $GCCRT_RE ]]; then cp -L "$path" "$DEV/lib/fallback/$name"; continue; fi
  cp -L "$path" "$DEV/lib/$name"
done < <(closure)
# libmpi etc. find their MCA helper libs (libmca_common_sm.so.40, libpmix.so.2) through
# LD_LIBRARY_PATH like the rest: they are in the closure above.

say "strip"
find "$DEV" -type f \( -name '*.so*' -o -perm -u+x \) ! -name '*.sh' -print0 |
  xargs -0 strip --strip-unneeded 2>/dev/null
echo "$ROOT" > "$DEV/BUILD_ROOT"
{
  echo "built $(date -u +%FT%TZ) on $(hostname) from $(git rev-parse --short HEAD)$(git diff --quiet || echo '+dirty')"
  echo "cuda archs: $(grep -m1 '^CMAKE_CUDA_ARCHITECTURES' "$BUILD/CMakeCache.txt")"
  echo "nccl built against: $(strings /usr/local/cuda/lib64/libnccl.so.2 2>/dev/null | grep -m1 'NCCL version')"
  echo "open mpi: $(ompi_info --version 2>/dev/null | head -1)"
} > "$DEV/BUILD_INFO"

# env.sh: everything run.sh needs to run from the pack, relocatable (it finds its own dir).
cat > "$DEV/env.sh" <<'EOF'
# Sourced (bash) by bench/device/run.sh: run parafuse's binaries and Debian's Open MPI 4.1 from
# this folder wherever it lies. Written by bench/device/pack.sh.
PF_DEV=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export PF_DEV
# Our libraries first; run.sh appends the machine's CUDA dirs (cuBLAS, cudart, NCCL) after.
export LD_LIBRARY_PATH="$PF_DEV/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PATH="$PF_DEV/mpi/bin:$PF_DEV/bin:$PATH"
# Open MPI 4.1 relocation: OPAL_PREFIX alone would give Debian's multiarch subpaths, so each
# directory it looks in is set explicitly (opal's "env" installdirs component reads these).
export OPAL_PREFIX="$PF_DEV/mpi" OPAL_EXEC_PREFIX="$PF_DEV/mpi"
export OPAL_BINDIR="$PF_DEV/mpi/bin" OPAL_LIBDIR="$PF_DEV/lib"
export OPAL_PKGLIBDIR="$PF_DEV/mpi/lib/openmpi3" OPAL_DATAROOTDIR="$PF_DEV/mpi/share"
export OPAL_DATADIR="$PF_DEV/mpi/share" OPAL_PKGDATADIR="$PF_DEV/mpi/share/openmpi"
export OPAL_SYSCONFDIR="$PF_DEV/mpi/etc"
# PMIx 4 (mpirun's PMIx server): its plugins and help texts from here, and the hash GDS
# instead of the shared-memory dstore, which trips over container /dev/shm limits.
export PMIX_MCA_mca_base_component_path="$PF_DEV/mpi/lib/pmix"
export PMIX_PKGLIBDIR="$PF_DEV/mpi/lib/pmix" PMIX_PKGDATADIR="$PF_DEV/mpi/share/pmix"
export PMIX_MCA_gds=hash
# hwloc: no plugins (PCI/GL/OpenCL discovery is not needed to place 2 ranks).
export HWLOC_PLUGINS_PATH="$PF_DEV/mpi/lib/hwloc-none"
# One node, no InfiniBand: ob1 over shared memory (vader) and self. CMA single-copy needs
# ptrace rights that containers often withhold, so copy-in/copy-out. No UCX/OFI anywhere.
export OMPI_MCA_pml=ob1 OMPI_MCA_btl=self,vader OMPI_MCA_mtl=^ofi,psm,psm2
export OMPI_MCA_osc=sm,rdma OMPI_MCA_btl_vader_single_copy_mechanism=none
export OMPI_MCA_btl_base_warn_component_unused=0
export OMPI_MCA_rmaps_base_oversubscribe=1 OMPI_MCA_hwloc_base_binding_policy=none
# Launch on this node only: the default rsh launcher aborts mpirun when there is no ssh/rsh
# binary (containers), even for local ranks.
export OMPI_MCA_plm=isolated
# The device machine runs commands as root.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# One BLAS thread per rank (as ctest does); the CPU backend is only the reference here.
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1} OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
EOF

# ---------------------------------------------------------------- facts
say "GLIBC / GLIBCXX versions the pack needs"
max_ver() { find "$DEV" -type f \( -name '*.so*' -o -perm -u+x \) ! -name '*.sh' -print0 |
            xargs -0 objdump -T 2>/dev/null | grep -o "$1"'_[0-9.]*[0-9]' | sort -Vu | tail -1; }
glibc_max=$(max_ver GLIBC)
glibcxx_max=$(find "$DEV/bin" "$DEV/lib" -maxdepth 1 -type f -print0 | xargs -0 objdump -T 2>/dev/null |
              grep -o 'GLIBCXX_[0-9.]*[0-9]' | sort -Vu | tail -1)
above=$(find "$DEV" -type f \( -name '*.so*' -o -perm -u+x \) ! -name '*.sh' -print0 |
        while IFS= read -r -d '' f; do
          v=$(objdump -T "$f" 2>/dev/null | grep -o 'GLIBC_[0-9.]*[0-9]' | sort -Vu | tail -1)
          [ "$(printf '%s\n' "$v" GLIBC_2.34 | sort -V | tail -1)" != GLIBC_2.34 ] && echo "  $v ${f#"$DEV"/}"
        done)
echo "highest GLIBC symbol version needed: $glibc_max (this machine: $(ldd --version | head -1 | grep -o '[0-9.]*$'))"
[ -z "$above" ] || { echo "needing more than GLIBC_2.34:"; echo "$above"; }
echo "highest GLIBCXX needed by bin/ and lib/: $glibcxx_max (lib/fallback has GCC 12's libstdc++)"
echo "glibc needed: $glibc_max; GLIBCXX needed: $glibcxx_max" >> "$DEV/BUILD_INFO"
echo "NCCL symbols used: $(nm -D --undefined-only "$DEV"/bin/* | awk '$2 ~ /^nccl/ {print $2}' | sort -u | tr '\n' ' ')" >> "$DEV/BUILD_INFO"

# ---------------------------------------------------------------- verify here
if [ "${PF_PACK_VERIFY:-1}" != 0 ]; then
  say "verify: mpirun -np 2 test_cuda_parallel from the pack, clean environment"
  log=$(mktemp -d)/verify
  # CUDA's dir is on the path as run.sh puts it there; nothing else from this machine.
  env -i HOME=/root PATH=/usr/bin:/bin bash -c "
      source '$DEV/env.sh'
      export LD_LIBRARY_PATH=\"\$LD_LIBRARY_PATH:/usr/local/cuda/lib64\"
      export OMPI_MCA_plm_rsh_agent=/nonexistent/ssh  # as on a machine without ssh
      LD_DEBUG=libs LD_DEBUG_OUTPUT='$log' timeout 120 mpirun --allow-run-as-root --oversubscribe \
        -x LD_DEBUG -x LD_DEBUG_OUTPUT -np 2 '$DEV/bin/test_cuda_parallel'" > "$log.out" 2>&1
  rc=$?
  tail -5 "$log.out"
  [ $rc = 0 ] || { cat "$log.out"; die "verify: mpirun exited $rc"; }
  grep -q 'PASSED\|SKIPPED' "$log.out" || die "verify: no gtest result in the output"
  # Every object the loader initialised, in mpirun and both ranks (dlopen'ed MCA components
  # included): each must be from the pack, glibc's, or CUDA's.
  loaded=$(cat "$log".* | grep -o 'calling init: .*' | awk '{print $3}' | sort -u)
  # The GCC runtime is the machine's own by design (lib/fallback only where it is too old).
  outside=$(echo "$loaded" | grep -v "^$ROOT/$DEV/")
  foreign=$(echo "$outside" |
            grep -vE "^(/usr)?/lib(64)?/(x86_64-linux-gnu/)?($(echo "$GLIBC_RE" | sed 's/^\^//')|$(echo "$GCCRT_RE" | sed 's/^\^//'))" |
            grep -vE '^/usr/local/cuda[^/]*/(lib|lib64|targets/x86_64-linux/lib)/lib(cudart|cublas|cublasLt|nccl)\.so')
  echo "loaded objects: $(echo "$loaded" | wc -l), from the pack: $(echo "$loaded" | grep -c "^$ROOT/$DEV/"); from elsewhere:"
  echo "$outside" | sed 's/^/  /'
  echo "MCA components loaded: $(echo "$loaded" | grep -o 'openmpi3/mca_[a-z0-9_]*' | sed 's|.*/mca_||' | sort -u | tr '\n' ' ')"
  echo "PMIx plugins loaded: $(echo "$loaded" | grep -o 'pmix/pmix_mca_[a-z0-9_]*' | sed 's|.*/pmix_mca_||' | sort -u | tr '\n' ' ')"
  [ -z "$foreign" ] || die "verify: loaded from outside the pack: $foreign"
  echo "verify: ok (all non-glibc, non-CUDA objects from $DEV)"
  rm -rf "$(dirname "$log")"
fi

# ---------------------------------------------------------------- carry artefacts
say "pack"
mkdir -p .device-pack
# xz -9: OpenBLAS's DYNAMIC_ARCH kernels compress ~9x; single thread so the result is stable.
tar -C . --owner=0 --group=0 -cf - "$DEV" | xz -9 -T1 > .device-pack/parafuse-device.tar.xz
(cd .device-pack && sha256sum parafuse-device.tar.xz > SHA256)
pack_bytes=$(stat -c %s .device-pack/parafuse-device.tar.xz)

if [ -f "$MODEL" ]; then
  say "split $MODEL"
  rm -rf .device-model-a .device-model-b
  mkdir -p .device-model-a .device-model-b
  size=$(stat -c %s "$MODEL")
  half=$(( (size + 1) / 2 ))
  base=$(basename "$MODEL")
  head -c "$half" "$MODEL" > ".device-model-a/$base.part-a"
  tail -c +$((half + 1)) "$MODEL" > ".device-model-b/$base.part-b"
  whole=$(sha256sum "$MODEL" | awk '{print $1}')
  for p in a b; do
    { echo "$whole  $base"
      (cd ".device-model-$p" && sha256sum "$base.part-$p"); } > ".device-model-$p/SHA256SUMS"
  done
else
  echo "no $MODEL: model parts not written (cluster/setup.sh fetches it)"
fi

# ---------------------------------------------------------------- sizes
say "sizes (a device call carries at most 64 MiB: tracked tree + carried paths)"
tree_bytes=$(git ls-files -z | xargs -0 stat -c %s 2>/dev/null | awk '{s+=$1} END {print s}')
untracked=$(git ls-files -z -o --exclude-standard | xargs -0 -r stat -c %s 2>/dev/null | awk '{s+=$1} END {print s+0}')
mib() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b/1048576}'; }
for d in "$DEV" "$DEV/bin" "$DEV/lib" "$DEV/mpi"; do du -sh "$d"; done
echo "largest: $(ls -S "$DEV/lib" | head -1) $(du -sh "$DEV/lib/$(ls -S "$DEV/lib" | head -1)" | cut -f1) (not shrinkable: Debian's DYNAMIC_ARCH OpenBLAS; xz packs it ~9x)"
echo "pack (xz): $(mib "$pack_bytes"); tree: $(mib "$tree_bytes") tracked + $(mib "$untracked") untracked"
limit=$((64 * 1048576))
for p in a b; do
  d=.device-model-$p
  [ -d "$d" ] || continue
  part=$(du -sb "$d" | awk '{print $1}')
  total=$((tree_bytes + untracked + pack_bytes + part))
  echo "call $([ $p = a ] && echo 1 || echo 2): tree + .device-pack + $d = $(mib "$total") $([ $total -lt $limit ] && echo '(fits)' || echo '(OVER 64 MiB)')"
done

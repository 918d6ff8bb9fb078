# rfake's Spack package (docs/admin-guide.md#spack).
#   spack repo add packaging/spack && spack install rfake

import os

from spack.package import *


class Rfake(Package):
    """Rootless container launcher for HPC clusters: runs SquashFS and
    Apptainer/Singularity SIF images as an unprivileged user, with no setuid
    helper and no daemon."""

    homepage = "https://example.org/rfake"
    git = "https://example.org/rfake.git"

    license("BSD-3-Clause")

    version("main", branch="main")

    depends_on("rust@1.85:", type="build")
    depends_on("pkgconfig", type="build")
    # bindgen (build.rs) needs libclang.
    depends_on("llvm+clang", type="build")
    # Headers at build time; loaded by rfake when first used (dlopen, not in
    # NEEDED), so also "link" (its lib directory goes into rfake's RUNPATH,
    # where dlopen looks) and "run".
    depends_on("libfuse@3.12:", type=("build", "link", "run"))
    depends_on("squashfs-tools-ng@1.2:", type=("build", "link", "run"))

    def setup_build_environment(self, env):
        env.set("LIBCLANG_PATH", self.spec["llvm"].prefix.lib)
        env.set("CARGO_HOME", join_path(self.stage.path, ".cargo"))

    def install(self, spec, prefix):
        cargo = which("cargo")
        cargo("build", "--release", "--locked")
        rfake = Executable(join_path("target", "release", "rfake"))
        mkdirp(prefix.bin)
        install(join_path("target", "release", "rfake"), prefix.bin)
        rfake("man", prefix.share.man.man1)
        for shell, path in [
            ("bash", join_path(prefix.share, "bash-completion", "completions", "rfake")),
            ("zsh", join_path(prefix.share, "zsh", "site-functions", "_rfake")),
            ("fish", join_path(prefix.share, "fish", "vendor_completions.d", "rfake.fish")),
        ]:
            mkdirp(os.path.dirname(path))
            with open(path, "w") as f:
                rfake("completions", shell, output=f)
        mkdirp(prefix.etc.rfake)
        install(join_path("docs", "rfake.toml.example"), join_path(prefix.etc.rfake, "rfake.toml"))
        mkdirp(prefix.share.doc.rfake)
        install("README.md", prefix.share.doc.rfake)
        install_tree("docs", join_path(prefix.share.doc.rfake, "docs"))

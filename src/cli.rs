//! The command line: the one clap definition behind `rfake --help` and the
//! man page.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// `rfake -V`: the version and the commit it was built from.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("RFAKE_GIT_COMMIT"),
    ")"
);

/// `rfake --version`: also what the build contains (build.rs).
const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    "\ncommit: ",
    env!("RFAKE_GIT_COMMIT"),
    "\nfeatures: ",
    env!("RFAKE_BUILD_FEATURES"),
    "\ntarget: ",
    env!("RFAKE_TARGET"),
);

#[derive(Debug, Parser)]
#[command(
    name = "rfake",
    version = VERSION,
    long_version = LONG_VERSION,
    about = "Run container images without root on HPC clusters",
    long_about = "rfake runs a command inside a single-file container image (SquashFS or \
                  Apptainer/Singularity SIF), an unpacked directory or an image from a registry \
                  (docker://, oras://), as an unprivileged user: \
                  no setuid helper, no daemon, no subuid ranges. The image is served by \
                  rfake's own FUSE server (or squashfuse) inside a private mount namespace \
                  and you appear as root inside \
                  a user namespace with a one-entry map, while you stay yourself on the host.",
    after_help = "Exit status: the payload's own status (128+N when killed by signal N); \
                  rfake's own failures: 64 usage, 65 bad image, 66 missing or unreadable \
                  image, 68 registry unreachable, 69 host prerequisite missing, 70 internal \
                  error, 71 kernel call failed, 73 output exists (pull), 76 registry \
                  protocol error, 77 refused, 78 configuration error, 126 command not \
                  executable, 127 command not found. See docs/exit-codes.md."
)]
pub struct Cli {
    /// More output on stderr: -v shows each set-up step and its duration,
    /// -vv adds details (RFAKE_LOG=debug works too).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Commands,
}

// Deferred: a subcommand's arguments are built only when it is the one
// invoked (or for --help, man pages and completions), instead of the whole
// tree on every start: building all of it cost about 0.3 ms of each launch
// (docs/benchmarks.md, "Start-up diet"). With deferral, a flattened struct's
// or nested enum's doc comment would replace the subcommand's own `about`,
// which is why those below carry plain comments (`//`), not doc comments.
#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum Commands {
    /// Run COMMAND inside IMAGE.
    Exec {
        #[command(flatten)]
        launch: LaunchArgs,
        #[command(flatten)]
        pull: PullArgs,
        /// A SquashFS file, a SIF file, an unpacked root directory, or a
        /// reference: docker://NAME[:TAG|@DIGEST], oras://NAME[:TAG],
        /// oci-archive:FILE, docker-archive:FILE.
        image: PathBuf,
        /// The command and its arguments, looked up in the image's PATH.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<OsString>,
    },
    /// Run the image's runscript (/.singularity.d/runscript), else /bin/sh.
    Run {
        #[command(flatten)]
        launch: LaunchArgs,
        #[command(flatten)]
        pull: PullArgs,
        /// A SquashFS file, a SIF file, an unpacked root directory, or a
        /// reference: docker://NAME[:TAG|@DIGEST], oras://NAME[:TAG],
        /// oci-archive:FILE, docker-archive:FILE.
        image: PathBuf,
        /// Arguments passed to the runscript.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Start an interactive shell (/bin/sh) inside IMAGE.
    Shell {
        #[command(flatten)]
        launch: LaunchArgs,
        #[command(flatten)]
        pull: PullArgs,
        /// A SquashFS file, a SIF file, an unpacked root directory, or a
        /// reference: docker://NAME[:TAG|@DIGEST], oras://NAME[:TAG],
        /// oci-archive:FILE, docker-archive:FILE.
        image: PathBuf,
    },
    /// Run the image's test script (a definition file's %test,
    /// /.singularity.d/test) inside IMAGE; an image without one passes.
    Test {
        #[command(flatten)]
        launch: LaunchArgs,
        #[command(flatten)]
        pull: PullArgs,
        /// A SquashFS file, a SIF file, an unpacked root directory, or a
        /// reference: docker://NAME[:TAG|@DIGEST], oras://NAME[:TAG],
        /// oci-archive:FILE, docker-archive:FILE.
        image: PathBuf,
    },
    /// Print the image's help (a definition file's %help,
    /// /.singularity.d/runscript.help), without running anything.
    RunHelp {
        #[command(flatten)]
        pull: PullArgs,
        /// A SquashFS file, a SIF file, an unpacked root directory, or a
        /// reference: docker://NAME[:TAG|@DIGEST], oras://NAME[:TAG],
        /// oci-archive:FILE, docker-archive:FILE.
        image: PathBuf,
    },
    /// Check that this host can run rfake and say how to fix what is missing;
    /// with --image, compare an image's MPI stack with this host's.
    Doctor {
        /// Compare the MPI, PMIx, UCX, libfabric and glibc of IMAGE (a
        /// SquashFS or SIF file, a root directory, or a reference such as
        /// docker://NAME; read without starting it) with this host's, and
        /// say whether the hybrid model (the image's MPI under the host's
        /// launcher) or the bind model (the host's MPI bound in) will work.
        #[arg(long, value_name = "IMAGE")]
        image: Option<std::path::PathBuf>,
        #[command(flatten)]
        pull: PullArgs,
    },
    /// Print the effective configuration and where each value comes from.
    Config,
    /// Build a single-file image without root: SquashFS, or SIF when OUT
    /// ends in .sif.
    #[command(
        long_about = "Build a single-file image without root. SOURCE is a directory (a root \
                      filesystem), a root filesystem tarball (.tar, .tar.gz, .tar.xz, .tar.zst), \
                      an OCI image (layout directory, OCI archive, or docker-archive as written by \
                      podman/docker save), a recipe (TOML, see images/recipes/README.md), a \
                      docker:// reference, or an Apptainer definition file (its %post and %test \
                      run as root in a user namespace, under a seccomp filter that lets calls \
                      for other users succeed; see docs/build.md). \
                      Everything is owned by root in the image. Entries keep their source's \
                      modification times, clamped to SOURCE_DATE_EPOCH when it is set; the files \
                      rfake generates and the image's own time are SOURCE_DATE_EPOCH, else 0. The \
                      output is reproducible: the same SOURCE gives the same bytes (what a \
                      definition file's %post does may not be)."
    )]
    Build {
        #[command(flatten)]
        args: BuildArgs,
        /// The image to write.
        out: PathBuf,
        #[command(flatten)]
        pull: PullArgs,
        /// What to build it from: a path, or a docker:// reference.
        source: PathBuf,
    },
    /// Fetch an image from a registry (or an archive) into a file of its
    /// own: SIF when OUT ends in .sif, else SquashFS.
    #[command(
        long_about = "Fetch an image into a single file: SIF when OUT ends in .sif (with the \
                      image's Env, Entrypoint, Cmd, WorkingDir and labels, as rfake build keeps \
                      them), else SquashFS. REF is docker://NAME[:TAG|@DIGEST], \
                      oras://NAME[:TAG] (a SIF pushed as an OCI artifact), oci-archive:FILE or \
                      docker-archive:FILE. OUT defaults to NAME_TAG.sif in the current \
                      directory, as Apptainer names it. Blobs go through the image cache \
                      (RFAKE_CACHEDIR, cache_dir), so a second pull downloads nothing and an \
                      interrupted one resumes."
    )]
    #[command(override_usage = "rfake pull [OPTIONS] [OUT] <REF>")]
    Pull {
        #[command(flatten)]
        pull: PullArgs,
        /// Overwrite OUT if it exists.
        #[arg(long)]
        force: bool,
        /// [OUT] REF: the file to write (optional) and the reference.
        #[arg(required = true, num_args = 1..=2, value_names = ["OUT", "REF"])]
        targets: Vec<PathBuf>,
    },
    /// Describe an image without mounting it: format, SIF objects,
    /// SquashFS, labels, environment, runscript, definition.
    Inspect {
        /// Print the same as JSON.
        #[arg(long)]
        json: bool,
        /// List the files under PATH (default /) instead.
        #[arg(long, value_name = "PATH", num_args = 0..=1, default_missing_value = "/")]
        list: Option<String>,
        /// Print the file at PATH inside the image instead.
        #[arg(long, value_name = "PATH", conflicts_with = "list")]
        cat: Option<String>,
        #[command(flatten)]
        pull: PullArgs,
        /// A SquashFS file, a SIF file, an unpacked root directory, or a
        /// reference: docker://NAME[:TAG|@DIGEST], oras://NAME[:TAG],
        /// oci-archive:FILE, docker-archive:FILE.
        image: PathBuf,
    },
    /// Write the man pages generated from this command line into DIR.
    Man {
        /// Output directory (created with its parents).
        dir: PathBuf,
    },
    /// Print the completion script for SHELL on stdout.
    Completions {
        /// bash, zsh or fish (also elvish, powershell).
        shell: clap_complete::Shell,
    },
    /// List or clean the image cache (images pulled from registries).
    Cache {
        #[command(subcommand)]
        command: CacheCommand,
    },
    /// Save or remove the credentials rfake uses for an image registry.
    Registry {
        #[command(subcommand)]
        command: RegistryCommand,
    },
    /// Start, list and stop instances: containers that run in the
    /// background; exec, run and shell enter them as instance://NAME.
    Instance {
        #[command(subcommand)]
        command: crate::instance::InstanceCommand,
    },
    /// Make persistent overlay images (for --overlay).
    Overlay {
        #[command(subcommand)]
        command: OverlayCommand,
    },
}

// `rfake overlay ...`.
#[derive(Debug, Subcommand)]
pub enum OverlayCommand {
    /// Make an ext3 overlay image IMAGE (with upper/ and work/, owned by
    /// you), as `apptainer overlay create` does.
    Create {
        /// Size in MiB (64 to 1048576).
        #[arg(short, long, value_name = "MiB", default_value_t = 64)]
        size: u64,
        /// Leave the image sparse instead of allocating its blocks now.
        #[arg(long)]
        sparse: bool,
        /// Make this directory in the overlay (a container path),
        /// repeatable.
        #[arg(long = "create-dir", value_name = "DIR")]
        create_dirs: Vec<PathBuf>,
        /// The image file to make (it must not exist).
        image: PathBuf,
    },
}

// Options of `rfake build`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Compression: gzip (read by every squashfuse), zstd, xz or lz4.
    #[arg(long, value_name = "ALGORITHM", default_value = "gzip")]
    pub compress: String,
    /// SquashFS block size, a power of two from 4K to 1M.
    #[arg(long, value_name = "SIZE", default_value = "128K")]
    pub block_size: String,
    /// Leave out device nodes, FIFOs and sockets with a warning
    /// instead of failing.
    #[arg(long)]
    pub skip_special: bool,
    /// Give a SIF a random UUID (default: all zeros, reproducible).
    #[arg(long)]
    pub random_uuid: bool,
    /// The most the image's files may add up to, uncompressed (a
    /// sparse file counts at its full size; 0: no limit). Default:
    /// build_max_size in rfake.toml, else 4T.
    #[arg(long, value_name = "SIZE")]
    pub max_size: Option<String>,
    /// A definition file: do not run its %test section at the end.
    #[arg(long)]
    pub notest: bool,
    /// A definition file's %post, a recipe's [[run]] steps: how they run as
    /// root: seccomp (calls for other users and groups, like chown, succeed
    /// without effect) or none (only the user namespace: such calls fail).
    #[arg(long, value_name = "MODE", default_value = "seccomp",
          value_parser = ["seccomp", "none"])]
    pub fakeroot_mode: String,
    /// A definition file, a recipe with [[run]] steps: the directory its
    /// root is written out in while the build runs (default: RFAKE_TMPDIR,
    /// else OUT's directory).
    #[arg(long, value_name = "DIR")]
    pub tmpdir: Option<PathBuf>,
    /// A definition file: keep the built root as the directory OUT (which
    /// must not exist, or be empty) instead of writing an image; it is
    /// built beside OUT.
    #[arg(long, conflicts_with_all = ["tmpdir", "compress", "block_size", "random_uuid", "max_size", "skip_special"])]
    pub sandbox: bool,
    /// A definition file: make every file owner-readable and writable and
    /// every directory owner-rwx before the tree is read (for what %post
    /// left unreadable, as chmod 000 does).
    #[arg(long)]
    pub fix_perms: bool,
}

// Options for images named by reference (docker://, oras://), shared by
// every command that takes an image.
#[derive(Debug, Clone, Args)]
pub struct PullArgs {
    /// The architecture: which image of a multi-architecture reference to
    /// take, and what a built SIF says it is for (amd64, arm64, ppc64le...;
    /// default: this host's).
    #[arg(long, value_name = "ARCH")]
    pub arch: Option<String>,
    /// Use only images already in the cache; never contact a registry
    /// (also the configuration's offline).
    #[arg(long)]
    pub offline: bool,
    /// Trust the certificate authorities in FILE (PEM) for registries,
    /// besides the system's (also registry_ca_file).
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// No progress on stderr while pulling.
    #[arg(short, long)]
    pub quiet: bool,
}

// Options shared by exec, run and shell.
#[derive(Debug, Clone, Args)]
pub struct LaunchArgs {
    /// Keep your own uid and gid inside the container instead of appearing
    /// as root (uid 0).
    #[arg(long, conflicts_with = "fakeroot")]
    pub keep_id: bool,

    /// Appear as root inside even under an MPI or PMIx launcher (where
    /// rfake keeps your uid by default: PMIx servers refuse uid 0).
    #[arg(short = 'f', long)]
    pub fakeroot: bool,

    /// Share one container with the other ranks of this job step on this
    /// node (default under Slurm steps and MPI launchers).
    #[arg(long, conflicts_with = "no_join")]
    pub join: bool,

    /// Do not share: a container of its own for this launch.
    #[arg(long)]
    pub no_join: bool,

    /// Share the container of every launch with this key (per user, node
    /// and image) instead of the launcher's job and step.
    #[arg(long, value_name = "KEY", conflicts_with = "no_join")]
    pub join_key: Option<String>,

    /// Apply the site's bind profiles NAME (binds and variables of a host
    /// MPI or fabric stack; `rfake config` lists them), repeatable,
    /// comma-separated (also from RFAKE_PROFILE; an empty value: none).
    #[arg(long = "profile", value_name = "NAME[,NAME...]")]
    pub profiles: Vec<String>,

    /// Bind a host path into the container: SRC[:DST[:ro|rw]], repeatable,
    /// comma-separated (also from RFAKE_BIND). DST defaults to SRC; an empty
    /// value or field is an error. A destination the image lacks is created
    /// in a throw-away overlay.
    #[arg(short = 'B', long = "bind", value_name = "SRC[:DST[:ro|rw]]")]
    pub binds: Vec<String>,

    /// Give the container a device from the CDI specs (cdi_spec_dirs,
    /// default /etc/cdi and /var/run/cdi): VENDOR/CLASS=NAME, e.g.
    /// nvidia.com/gpu=0 or nvidia.com/gpu=all; repeatable.
    #[arg(long = "device", value_name = "VENDOR/CLASS=NAME")]
    pub devices: Vec<String>,

    /// NVIDIA GPUs: the CDI spec for nvidia.com/gpu when there is one, else
    /// the driver's libraries (nvidia-container-cli list, or the linker
    /// cache), nvidia-smi and /dev/nvidia* from the host.
    #[arg(long)]
    pub nv: bool,

    /// AMD GPUs: the CDI spec for amd.com/gpu when there is one, else the
    /// ROCm libraries from the linker cache, rocm-smi, /dev/kfd and /dev/dri.
    #[arg(long)]
    pub rocm: bool,

    /// Bind SRC as your home directory (at DST, default the same path)
    /// instead of $HOME.
    #[arg(
        short = 'H',
        long,
        value_name = "SRC[:DST]",
        conflicts_with = "no_home"
    )]
    pub home: Option<String>,

    /// Do not bind your home directory.
    #[arg(long)]
    pub no_home: bool,

    /// No host home, /tmp, /var/tmp, scratch or current directory:
    /// private, empty tmpfs mounts for /tmp, /var/tmp and the home
    /// directory instead (directories under --workdir with it).
    #[arg(short = 'c', long)]
    pub contain: bool,

    /// --contain, --cleanenv, and new PID and IPC namespaces (as
    /// Apptainer's -C).
    #[arg(short = 'C', long)]
    pub containall: bool,

    /// Start the command in DIR (inside the container).
    #[arg(long, visible_alias = "cwd", value_name = "DIR")]
    pub pwd: Option<std::path::PathBuf>,

    /// Leave out default mounts, comma-separated: home, tmp (/tmp and
    /// /var/tmp), cwd, proc, sys, dev, hostfs (never mounted), bind-paths
    /// (the site's binds), or a site bind's destination path.
    #[arg(long = "no-mount", value_name = "WHAT,...")]
    pub no_mount: Vec<String>,

    /// A bind in Docker's form: type=bind,src=SRC,dst=DST[,ro]
    /// (source/destination/target too; CSV quoting for a ',' in a path),
    /// repeatable.
    #[arg(long = "mount", value_name = "type=bind,src=SRC,dst=DST[,ro]")]
    pub mounts: Vec<String>,

    /// With --contain: /tmp, /var/tmp and the home directory are DIR/tmp,
    /// DIR/var_tmp and DIR/home on disk instead of tmpfs; --scratch
    /// directories are under DIR/scratch.
    #[arg(short = 'W', long, value_name = "DIR")]
    pub workdir: Option<PathBuf>,

    /// An empty scratch directory at DIR inside (tmpfs, or under
    /// --workdir), comma-separated, repeatable.
    #[arg(short = 'S', long = "scratch", value_name = "DIR")]
    pub scratch: Vec<String>,

    /// A new PID namespace: the payload is process 1's only child and
    /// sees only the container's processes.
    #[arg(short = 'p', long)]
    pub pid: bool,

    /// A new IPC namespace (System V IPC, POSIX message queues).
    #[arg(short = 'i', long)]
    pub ipc: bool,

    /// A new UTS namespace (its own host name).
    #[arg(long)]
    pub uts: bool,

    /// Set the host name inside (implies --uts).
    #[arg(long, value_name = "NAME")]
    pub hostname: Option<String>,

    /// A new network namespace; with --network none (the only type rfake
    /// makes) only the loopback interface, up.
    #[arg(short = 'n', long)]
    pub net: bool,

    /// The network type for --net (implies it): none.
    #[arg(long, value_name = "TYPE")]
    pub network: Option<String>,

    /// Drop every capability of the payload (root inside can then do no
    /// more than you outside).
    #[arg(long, conflicts_with = "keep_privs")]
    pub no_privs: bool,

    /// Accepted for Apptainer's scripts: root inside already keeps the
    /// user namespace's capabilities.
    #[arg(long)]
    pub keep_privs: bool,

    /// Accepted for Apptainer's scripts: rfake always runs in a user
    /// namespace.
    #[arg(short = 'u', long)]
    pub userns: bool,

    /// Apptainer's SCIF apps: refused (rfake runs no SCIF apps).
    #[arg(long, value_name = "NAME")]
    pub app: Option<String>,

    /// Give the whole root a throw-away writable layer (tmpfs of SIZE,
    /// e.g. --writable-tmpfs=1G; default the configuration's
    /// writable_tmpfs_size, else 64 MiB).
    #[arg(long, value_name = "SIZE", num_args = 0..=1, require_equals = true,
          default_missing_value = "")]
    pub writable_tmpfs: Option<String>,

    /// A persistent overlay on the image: a directory (writes go to
    /// DIR/upper), an ext3 image from `rfake overlay create` (served by
    /// fuse2fs), or a SIF file's overlay partition; :ro adds it read-only.
    /// Repeatable: the read-only ones stack in order, the first on top,
    /// the one writable overlay above them all.
    #[arg(short = 'o', long = "overlay", value_name = "PATH[:ro]")]
    pub overlays: Vec<String>,

    /// Write into the SIF file's own overlay partition (as --overlay
    /// IMAGE.sif does); any other image is refused: rfake never writes into
    /// an image (use --writable-tmpfs or --overlay).
    #[arg(short = 'w', long)]
    pub writable: bool,

    /// Start from an empty environment (keeping HOME, USER, TERM, LANG and
    /// the scheduler's GPU binding, CUDA_VISIBLE_DEVICES...) instead of the
    /// host's.
    #[arg(short = 'e', long)]
    pub cleanenv: bool,

    /// Set NAME=value in the container (after the image's environment),
    /// repeatable.
    #[arg(long = "env", value_name = "NAME=value")]
    pub env: Vec<String>,

    /// Read NAME=value lines from FILE, a regular file (after RFAKE_ENV_*,
    /// before --env), repeatable.
    #[arg(long = "env-file", value_name = "FILE")]
    pub env_files: Vec<std::path::PathBuf>,

    /// The squashfuse program to serve the image (default: squashfuse_ll,
    /// else squashfuse, from PATH).
    #[arg(long, env = "RFAKE_SQUASHFUSE", value_name = "PROGRAM")]
    pub squashfuse: Option<PathBuf>,

    /// Print the launch plan (identity, mounts, command) and exit without
    /// running anything.
    #[arg(long)]
    pub dry_run: bool,
}

// `rfake cache` subcommands.
#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// List the cache's images, blobs and partial downloads, least
    /// recently used last, with the references that resolve to them.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Remove partial downloads, temporaries and the layer blobs of images
    /// already converted (entries in use by a running pull stay).
    Clean {
        /// Remove everything instead (references and prefetch profiles included).
        #[arg(long, conflicts_with = "older_than")]
        all: bool,
        /// Remove the entries not used for DURATION instead: a whole
        /// number and a unit s, m, h or d (30d).
        #[arg(long, value_name = "DURATION", value_parser = crate::cache::parse_duration)]
        older_than: Option<std::time::Duration>,
    },
}

// `rfake registry ...`.
#[derive(Debug, Subcommand)]
pub enum RegistryCommand {
    /// Check a user name and password (or token) with REGISTRY, then save
    /// them in $REGISTRY_AUTH_FILE, else ~/.docker/config.json (mode 0600).
    Login {
        /// The user name (asked on the terminal when not given).
        #[arg(short, long, value_name = "USER")]
        username: Option<String>,
        /// Read the password from standard input instead of the terminal.
        #[arg(long)]
        password_stdin: bool,
        /// Also trust the PEM CA certificate(s) in FILE for this registry's
        /// TLS certificate.
        #[arg(long, value_name = "FILE")]
        ca_file: Option<PathBuf>,
        /// HOST[:PORT] (docker.io for Docker Hub).
        registry: String,
    },
    /// Remove REGISTRY's credentials from $REGISTRY_AUTH_FILE, else
    /// ~/.docker/config.json.
    Logout {
        /// HOST[:PORT].
        registry: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn version_names_the_commit_features_and_target() {
        assert!(VERSION.starts_with(env!("CARGO_PKG_VERSION")));
        let lines: Vec<&str> = LONG_VERSION.lines().collect();
        assert_eq!(lines[0], env!("CARGO_PKG_VERSION"));
        let commit = lines[1].strip_prefix("commit: ").unwrap();
        assert!(
            commit == "unknown"
                || commit
                    .trim_end_matches("-dirty")
                    .chars()
                    .all(|c| c.is_ascii_hexdigit()),
            "{commit:?}"
        );
        assert!(lines[2].starts_with("features: libfuse3 "), "{}", lines[2]);
        assert!(lines[3].starts_with("target: "), "{}", lines[3]);
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn exec_keeps_hyphen_arguments_for_the_payload() {
        let cli =
            Cli::try_parse_from(["rfake", "-v", "exec", "--keep-id", "img", "ls", "-la"]).unwrap();
        match cli.command {
            Commands::Exec {
                launch, command, ..
            } => {
                assert!(launch.keep_id);
                assert_eq!(command, vec![OsString::from("ls"), OsString::from("-la")]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(cli.verbose, 1);
    }

    #[test]
    fn exec_needs_a_command() {
        assert!(Cli::try_parse_from(["rfake", "exec", "img"]).is_err());
    }
}

-- Lmod module for rfake installed under a prefix (docs/admin-guide.md#modules).
-- Copy to MODULEPATH/rfake/0.1.0.lua and set `prefix` to where rfake was
-- installed (for example with `make`-less installs: PREFIX/bin/rfake,
-- PREFIX/share/man/man1, PREFIX/etc/rfake/rfake.toml).
help([[
rfake 0.1.0: run container images without root (rfake exec IMAGE COMMAND).
Check the node with `rfake doctor`; documentation: man rfake, PREFIX/share/doc/rfake.
]])
whatis("Name: rfake")
whatis("Version: 0.1.0")
whatis("Description: rootless container launcher for HPC clusters")

local prefix = "/opt/rfake/0.1.0"

prepend_path("PATH", pathJoin(prefix, "bin"))
prepend_path("MANPATH", pathJoin(prefix, "share/man"))
-- The site configuration of this install (rfake reads /etc/rfake/rfake.toml otherwise).
setenv("RFAKE_CONFIG", pathJoin(prefix, "etc/rfake/rfake.toml"))
-- bash completion for interactive shells: `source $RFAKE_BASH_COMPLETION`.
setenv("RFAKE_BASH_COMPLETION", pathJoin(prefix, "share/bash-completion/completions/rfake"))

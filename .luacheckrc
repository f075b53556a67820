-- .luacheckrc — luacheck (Debian lua-check) over dlock's composed Redis
-- scripts: scripts/test.sh's test_lua dumps each one (the constants prelude
-- generated from keys.h, src/lua/core.lua, the script with src/lua/helpers.lua
-- inserted where it says "-- @helpers") and checks the dump, which is what
-- Redis runs.
--
-- Redis runs Lua 5.1 with the globals redis, KEYS and ARGV (read-only for a
-- script; luacheck would flag a write to them).
std = "lua51"
read_globals = { "redis", "KEYS", "ARGV" }
max_line_length = 100

ignore = {
    -- The prelude defines every constant of keys.h; each script uses some.
    "211/[%u_][%u%d_]*",
    -- core.lua's helpers reach every script; not every script needs
    -- next_fence (helpers.lua marks its own functions with
    -- "luacheck: push ignore 211"; core.lua does not yet).
    "211/next_fence",
    -- helpers.lua is inserted after a script's own top-level locals, so the
    -- helpers' parameters of the same names shadow them (431). Harmless
    -- while every helper takes what it uses as a parameter; listed by name
    -- so that a new shadowing still shows.
    "431/tok", "431/owner", "431/ttl", "431/kind", "431/exp", "431/now_ms",
    "431/want", "431/limit",
}

# embed_lua.cmake — turn src/lua/*.lua into a C header of byte arrays.
# Run as: cmake -DOUT=<header> -DSRC=<dir> -P embed_lua.cmake
# Each file NAME.lua becomes `static const char dlock__lua_NAME[]` (NUL-
# terminated), so the scripts stay real Lua files that Redis, luacheck and
# people read, and the library carries them without reading files at run time.
file(GLOB files "${SRC}/*.lua")
list(SORT files)
set(out "/* Generated from the files in src/lua by cmake/embed_lua.cmake: do not edit. */\n")
foreach(f ${files})
  get_filename_component(name "${f}" NAME_WE)
  file(READ "${f}" hex HEX)
  string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
  string(REGEX REPLACE "(0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,)" "\\1\n" bytes "${bytes}")
  string(APPEND out "static const char dlock__lua_${name}[] = {\n${bytes}0x00};\n")
endforeach()
# write only on change, so the library is not rebuilt for nothing
if(EXISTS "${OUT}")
  file(READ "${OUT}" old)
  if(old STREQUAL out)
    return()
  endif()
endif()
file(WRITE "${OUT}" "${out}")

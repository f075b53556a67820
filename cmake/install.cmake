# cmake/install.cmake — what `cmake --install` puts where, included by the
# top-level CMakeLists.txt once the targets exist.
#
#   bin/dlock                        the tool, with a relative RPATH to lib/
#   lib/libdlock.so.*, libdlock.a    the library
#   include/dlock.h
#   lib/pkgconfig/dlock.pc           pkg-config
#   lib/cmake/dlock/                 find_package(dlock): dlock::dlock,
#                                    dlock::dlock_static (COMPONENTS static)
#   share/man/man1/dlock.1           the manual pages, from docs/*.scd
#   share/man/man3/dlock.3           (scdoc, at build time; DLOCK_BUILD_MAN)
#   share/bash-completion/completions/dlock, share/zsh/site-functions/_dlock

include(CMakePackageConfigHelpers)

# The installed tool finds the installed library wherever the prefix is
# (/usr/local, /opt/dlock, a package's staging dir moved later): $ORIGIN
# is bin/ at run time, and lib/ is reached relative to it.
file(RELATIVE_PATH DLOCK_BIN_TO_LIB "${CMAKE_INSTALL_FULL_BINDIR}" "${CMAKE_INSTALL_FULL_LIBDIR}")
set_target_properties(dlock_cli PROPERTIES INSTALL_RPATH "$ORIGIN/${DLOCK_BIN_TO_LIB}")

set(DLOCK_CMAKEDIR "${CMAKE_INSTALL_LIBDIR}/cmake/dlock")
set_target_properties(dlock_static PROPERTIES EXPORT_NAME dlock_static)

install(TARGETS dlock EXPORT dlockTargets
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(TARGETS dlock_static EXPORT dlockStaticTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(TARGETS dlock_cli RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(FILES include/dlock.h DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})

# dlock.pc names the prefix it is installed under, which `cmake --install
# --prefix P` can choose after configuring: it is written at install time.
install(CODE "
  set(CMAKE_INSTALL_LIBDIR \"${CMAKE_INSTALL_LIBDIR}\")
  set(CMAKE_INSTALL_INCLUDEDIR \"${CMAKE_INSTALL_INCLUDEDIR}\")
  set(PROJECT_VERSION \"${PROJECT_VERSION}\")
  configure_file(\"${CMAKE_SOURCE_DIR}/dlock.pc.in\" \"${CMAKE_BINARY_DIR}/pkgconfig/dlock.pc\" @ONLY)
")
install(FILES ${CMAKE_BINARY_DIR}/pkgconfig/dlock.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)

install(EXPORT dlockTargets NAMESPACE dlock:: DESTINATION ${DLOCK_CMAKEDIR})
install(EXPORT dlockStaticTargets NAMESPACE dlock:: DESTINATION ${DLOCK_CMAKEDIR})
configure_package_config_file(${CMAKE_SOURCE_DIR}/cmake/dlockConfig.cmake.in
                              ${CMAKE_BINARY_DIR}/dlockConfig.cmake
                              INSTALL_DESTINATION ${DLOCK_CMAKEDIR})
# 0.x: a minor version may break the API (SameMinorVersion); from 1.0 on,
# SameMajorVersion.
write_basic_package_version_file(${CMAKE_BINARY_DIR}/dlockConfigVersion.cmake
                                 COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_BINARY_DIR}/dlockConfig.cmake ${CMAKE_BINARY_DIR}/dlockConfigVersion.cmake
        DESTINATION ${DLOCK_CMAKEDIR})

# ---- manual pages: docs/dlock.1.scd and docs/dlock.3.scd -> man/dlock.1, .3
set(DLOCK_BUILD_MAN "AUTO" CACHE STRING "Build the man pages with scdoc: AUTO, ON or OFF")
set(DLOCK_MAN_BUILT OFF)
if(NOT DLOCK_BUILD_MAN STREQUAL "OFF")
  find_program(SCDOC scdoc)
  if(SCDOC)
    set(DLOCK_MAN_BUILT ON)
  elseif(DLOCK_BUILD_MAN STREQUAL "ON")
    message(FATAL_ERROR "DLOCK_BUILD_MAN=ON needs scdoc (Debian: apt-get install scdoc)")
  else()
    message(STATUS "scdoc not found: the man pages are not built (Debian: apt-get install scdoc)")
  endif()
endif()
if(DLOCK_MAN_BUILT)
  set(DLOCK_MAN_PAGES "")
  foreach(page dlock.1 dlock.3)
    set(src ${CMAKE_SOURCE_DIR}/docs/${page}.scd)
    set(out ${CMAKE_BINARY_DIR}/man/${page})
    add_custom_command(OUTPUT ${out}
                       COMMAND ${CMAKE_COMMAND} -E make_directory ${CMAKE_BINARY_DIR}/man
                       COMMAND sh -c "\"$0\" < \"$1\" > \"$2\"" ${SCDOC} ${src} ${out}
                       DEPENDS ${src}
                       COMMENT "scdoc ${page}"
                       VERBATIM)
    list(APPEND DLOCK_MAN_PAGES ${out})
    string(REGEX REPLACE ".*\\." "" section ${page})
    install(FILES ${out} DESTINATION ${CMAKE_INSTALL_MANDIR}/man${section})
  endforeach()
  add_custom_target(man ALL DEPENDS ${DLOCK_MAN_PAGES})
endif()

# ---- shell completion
install(FILES ${CMAKE_SOURCE_DIR}/completions/dlock.bash
        DESTINATION ${CMAKE_INSTALL_DATADIR}/bash-completion/completions RENAME dlock)
install(FILES ${CMAKE_SOURCE_DIR}/completions/_dlock
        DESTINATION ${CMAKE_INSTALL_DATADIR}/zsh/site-functions)

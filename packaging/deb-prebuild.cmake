# CPACK_PRE_BUILD_SCRIPTS for the .deb: runs on the staged tree (what
# `cmake --install` put there) before cpack packs it, and makes it what Debian
# policy wants of a binary package without changing `cmake --install`:
#   - man pages gzip -9n compressed (policy 12.1; lintian
#     uncompressed-manual-page is an error);
#   - binaries without the .comment and .note sections (CPACK_STRIP_FILES
#     strips symbols only; lintian binary-has-unneeded-section).
set(stage "${CPACK_TEMPORARY_INSTALL_DIRECTORY}")
if(NOT IS_DIRECTORY "${stage}")
  message(FATAL_ERROR "deb-prebuild: no staging directory '${stage}'")
endif()
file(GLOB_RECURSE pages "${stage}/*/share/man/man[1-9]/*.[1-9]")
if(NOT pages)
  message(FATAL_ERROR "deb-prebuild: no man pages under ${stage}")
endif()
foreach(page IN LISTS pages)
  execute_process(COMMAND gzip -9nf "${page}" RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "deb-prebuild: gzip ${page} failed: ${rc}")
  endif()
endforeach()
file(GLOB bins "${stage}/*/bin/*")
foreach(bin IN LISTS bins)
  execute_process(COMMAND strip --remove-section=.comment --remove-section=.note "${bin}"
                  RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "deb-prebuild: strip ${bin} failed: ${rc}")
  endif()
endforeach()

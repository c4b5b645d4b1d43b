# `cpack -G DEB` (from the build directory): a Debian package of what
# `cmake --install` installs, with prefix /usr (docs/PACKAGING.md).
# tests/install/deb_test.sh builds it, runs lintian and installs it into a
# clean Debian 12 root.
set(CPACK_PACKAGE_NAME cryptex)
set(CPACK_PACKAGE_VENDOR "cryptex developers")
set(CPACK_PACKAGE_CONTACT "cryptex developers <cryptex@example.org>")
set(CPACK_DEBIAN_PACKAGE_MAINTAINER "cryptex developers <cryptex@example.org>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "sealed, signed, verified read-only component images")
set(CPACK_PACKAGE_DESCRIPTION
    "cryptex seals directory trees into signed, compressed, read-only images;\n\
cryptexfs mounts them through FUSE and verifies every block it serves.")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION admin)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
# Debian ships stripped binaries (lintian: unstripped-binary-or-object) and
# compressed man pages: deb-prebuild.cmake does the rest on the staged tree.
set(CPACK_STRIP_FILES ON)
set(CPACK_PRE_BUILD_SCRIPTS ${CMAKE_CURRENT_LIST_DIR}/deb-prebuild.cmake)
# The libraries, with their versions, from dpkg-shlibdeps over the installed
# binaries (libfuse3-3, libzstd1, libssl3, libdivsufsort3, libc6, libstdc++6,
# libgcc-s1, libinih1); fuse3 for mount.fuse3 and
# fusermount3, which nothing links but mount(8), fstab and the unit use;
# libcurl4, whose libcurl.so.4 the https feed transport loads when it is
# first used (feed/curl_api.h; 7.80 for curl_url_strerror).
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_DEPENDS "fuse3, libcurl4 (>= 7.80.0)")
# conffiles: every file the package installs under /etc, one absolute path
# a line. There are none today (the postinst only creates directories);
# deb_test.sh fails if a file under /etc is missing from this list.
set(CRYPTEX_DEB_CONFFILES "")
set(cx_control ${CMAKE_CURRENT_LIST_DIR}/postinst ${CMAKE_CURRENT_LIST_DIR}/postrm)
if(CRYPTEX_DEB_CONFFILES)
  list(JOIN CRYPTEX_DEB_CONFFILES "\n" cx_conffiles)
  file(WRITE ${PROJECT_BINARY_DIR}/packaging/conffiles "${cx_conffiles}\n")
  list(APPEND cx_control ${PROJECT_BINARY_DIR}/packaging/conffiles)
endif()
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA ${cx_control})
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)

# /usr/share/doc/cryptex/copyright (machine-readable, Debian policy 12.5)
# and changelog.gz (the package is native: its version has no Debian
# revision), installed by `cmake --install` too. The changelog's newest
# entry must carry the project's version.
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS
                                       ${CMAKE_CURRENT_LIST_DIR}/changelog)
file(STRINGS ${CMAKE_CURRENT_LIST_DIR}/changelog cx_changelog_head LIMIT_COUNT 1)
if(NOT cx_changelog_head MATCHES "^cryptex \\(${PROJECT_VERSION}\\) ")
  message(FATAL_ERROR "packaging/changelog: newest entry '${cx_changelog_head}' "
                      "is not version ${PROJECT_VERSION} (project() in CMakeLists.txt)")
endif()
file(MAKE_DIRECTORY ${PROJECT_BINARY_DIR}/packaging)
execute_process(COMMAND gzip -9nc ${CMAKE_CURRENT_LIST_DIR}/changelog
                OUTPUT_FILE ${PROJECT_BINARY_DIR}/packaging/changelog.gz
                RESULT_VARIABLE cx_gzip_rc)
if(NOT cx_gzip_rc EQUAL 0)
  message(FATAL_ERROR "gzip packaging/changelog failed: ${cx_gzip_rc}")
endif()
install(FILES ${CMAKE_CURRENT_LIST_DIR}/copyright ${PROJECT_BINARY_DIR}/packaging/changelog.gz
        DESTINATION ${CMAKE_INSTALL_DOCDIR})
include(CPack)

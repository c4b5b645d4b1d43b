# `cpack -G DEB` (from the build directory): a Debian package of what
# `cmake --install` installs, with prefix /usr. No CI test yet.
set(CPACK_PACKAGE_NAME cryptex)
set(CPACK_PACKAGE_VENDOR "cryptex")
set(CPACK_PACKAGE_CONTACT "cryptex maintainers <cryptex@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "sealed, signed, verified read-only component images")
set(CPACK_PACKAGE_DESCRIPTION
    "cryptex seals directory trees into signed, compressed, read-only images;\n\
cryptexfs mounts them through FUSE and verifies every block it serves.")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION admin)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
# The libraries, with their versions, from dpkg-shlibdeps (libfuse3-3,
# libzstd1, libssl3, libinih1, libc6, libstdc++6, ...); fuse3 for
# fusermount3 and mount.fuse3, which nothing links.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_DEPENDS "fuse3")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA ${CMAKE_CURRENT_LIST_DIR}/postinst
                                      ${CMAKE_CURRENT_LIST_DIR}/postrm)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
# Nothing is installed in /etc (the postinst only creates directories), so
# there are no conffiles; list any file added under /etc here.
include(CPack)

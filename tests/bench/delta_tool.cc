// Encoder/decoder driver for tests/bench/delta_bench.py (not a product
// command). Inputs are mapped read-only, so RSS counts only touched pages.
//
//   delta_tool encode LOWER TARGET OUT [--segment-log2 N] [--level N] [--threads N]
//                     [--no-elf]
//   delta_tool decode LOWER DELTA OUT
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>

#include "delta.h"

namespace {

// A read-only mapping of a whole file (empty files map to an empty span).
class Mapped {
 public:
  explicit Mapped(const char* path) {
    const int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st {};
    if (fd < 0 || fstat(fd, &st) != 0) {
      std::fprintf(stderr, "delta_tool: %s: %s\n", path, std::strerror(errno));
      if (fd >= 0) close(fd);
      return;
    }
    size_ = static_cast<size_t>(st.st_size);
    if (size_ > 0) {
      void* p = mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
      if (p != MAP_FAILED) data_ = static_cast<const uint8_t*>(p);
    }
    close(fd);
    ok_ = size_ == 0 || data_ != nullptr;
  }
  ~Mapped() {
    if (data_) munmap(const_cast<uint8_t*>(data_), size_);
  }
  Mapped(const Mapped&) = delete;
  Mapped& operator=(const Mapped&) = delete;
  bool ok() const { return ok_; }
  std::span<const uint8_t> bytes() const { return {data_, size_}; }
  // Drops the touched pages from RSS (they are read again from the page cache).
  void Release() const {
    if (data_) madvise(const_cast<uint8_t*>(data_), size_, MADV_DONTNEED);
  }

 private:
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  bool ok_ = false;
};

int Write(const char* path, std::span<const uint8_t> bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
  if (!out.good()) {
    std::fprintf(stderr, "delta_tool: cannot write %s\n", path);
    return 1;
  }
  return 0;
}

int Usage() {
  std::fprintf(stderr,
               "usage: delta_tool encode LOWER TARGET OUT [--segment-log2 N] [--level N] "
               "[--threads N] [--no-elf]\n       delta_tool decode LOWER DELTA OUT\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 5) return Usage();
  const std::string cmd = argv[1];
  Mapped a(argv[2]), b(argv[3]);
  if (!a.ok() || !b.ok()) return 1;
  if (cmd == "encode") {
    cryptex::DeltaOptions o;
    for (int i = 5; i < argc; ++i) {
      const std::string f = argv[i];
      if (f == "--no-elf") {
        o.elf_references = false;
      } else if (f == "--segment-log2" && i + 1 < argc) {
        o.segment_log2 = static_cast<uint32_t>(std::stoul(argv[++i]));
      } else if (f == "--threads" && i + 1 < argc) {
        o.threads = std::stoi(argv[++i]);
      } else if (f == "--level" && i + 1 < argc) {
        o.zstd_level = std::stoi(argv[++i]);
      } else {
        return Usage();
      }
    }
    o.release_inputs = [&] {  // as mkpatch does with its scratch copies
      a.Release();
      b.Release();
    };
    auto d = cryptex::EncodeDelta(a.bytes(), b.bytes(), o);
    if (!d.ok()) {
      std::fprintf(stderr, "delta_tool: %s\n", d.status().ToString().c_str());
      return 1;
    }
    return Write(argv[4], *d);
  }
  if (cmd == "decode") {
    auto t = cryptex::ApplyDelta(b.bytes(), a.bytes(), argv[3]);
    if (!t.ok()) {
      std::fprintf(stderr, "delta_tool: %s\n", t.status().ToString().c_str());
      return 1;
    }
    return Write(argv[4], *t);
  }
  return Usage();
}

#include "walk.h"

#include <sys/stat.h>

#include <deque>
#include <set>

namespace cryptex::walk {

bool Report::Mentions(const std::string& needle) const {
  if (open.message().find(needle) != std::string::npos) return true;
  if (verify.message().find(needle) != std::string::npos) return true;
  for (const auto& e : errors)
    if (e.find(needle) != std::string::npos) return true;
  return false;
}

std::string Report::Summary() const {
  std::string s = "open: " + (open.ok() ? std::string("ok") : open.ToString()) + "\n";
  size_t shown = 0;
  for (const auto& e : errors) {
    if (++shown > 8) {
      s += "  ... " + std::to_string(errors.size() - 8) + " more\n";
      break;
    }
    s += "  error: " + e + "\n";
  }
  for (const auto& e : walker_errors) s += "  WALKER: " + e + "\n";
  s += "files read: " + std::to_string(files.size()) +
       ", failed: " + std::to_string(failed.size()) +
       "\nverify: " + (verify.ok() ? std::string("ok") : verify.ToString()) + "\n";
  return s;
}

namespace {

class Walker {
 public:
  Walker(const Image& img, const Limits& limits, Report* r) : img_(img), limits_(limits), r_(*r) {}

  void Go() {
    std::deque<std::pair<uint64_t, std::string>> queue{{img_.root_ino(), ""}};
    std::set<uint64_t> visited{img_.root_ino()};
    Attrs(img_.root_ino(), "/");
    while (!queue.empty()) {
      auto [dir, dpath] = queue.front();
      queue.pop_front();
      std::vector<DirEntry> entries;
      Status st = img_.ReadDir(dir, 0, [&](const DirEntry& e, uint64_t) {
        if (++r_.entries > limits_.max_entries) return false;
        entries.push_back(e);
        return true;
      });
      if (r_.entries > limits_.max_entries) {
        r_.walker_errors.push_back("more than " + std::to_string(limits_.max_entries) + " entries");
        return;
      }
      if (!st.ok()) {
        r_.errors.push_back((dpath.empty() ? "/" : dpath) + ": readdir: " + st.ToString());
        continue;
      }
      std::set<std::string> names;
      for (const auto& e : entries) {
        const std::string path = dpath + "/" + e.name;
        if (!names.insert(e.name).second) {
          r_.walker_errors.push_back(path + ": duplicate name served by readdir");
        }
        if (e.name.empty() || e.name == "." || e.name == ".." ||
            e.name.find('/') != std::string::npos) {
          r_.walker_errors.push_back(path + ": invalid name served by readdir");
          continue;
        }
        auto look = img_.Lookup(dir, e.name);
        if (!look.ok()) {
          r_.errors.push_back(path + ": lookup: " + look.status().ToString());
        } else if (look->ino != e.ino) {
          r_.walker_errors.push_back(path + ": lookup and readdir disagree");
        }
        auto in = img_.GetInode(e.ino);
        if (!in.ok()) {
          r_.errors.push_back(path + ": getattr: " + in.status().ToString());
          r_.failed[path] = in.status().ToString();
          continue;
        }
        r_.modes[path] = in->mode;
        Attrs(e.ino, path);
        if (in->is_dir()) {
          if (!visited.insert(e.ino).second) {
            r_.walker_errors.push_back(path + ": directory inode " + std::to_string(e.ino) +
                                       " served twice (cycle or hard-linked directory)");
            continue;
          }
          queue.emplace_back(e.ino, path);
        } else if (in->is_symlink()) {
          auto t = img_.ReadLink(e.ino);
          if (t.ok()) {
            r_.links[path] = *t;
          } else {
            r_.errors.push_back(path + ": readlink: " + t.status().ToString());
            r_.failed[path] = t.status().ToString();
          }
        } else if (in->is_reg()) {
          ReadFile(*in, path);
        }
      }
    }
  }

 private:
  void Attrs(uint64_t ino, const std::string& path) {
    auto xs = img_.ListXattrs(ino);
    if (!xs.ok()) {
      r_.errors.push_back(path + ": listxattr: " + xs.status().ToString());
      return;
    }
    std::string all;
    for (const auto& x : *xs) {
      all += x.name + "=" + x.value + "\n";
      auto v = img_.GetXattr(ino, x.name);
      if (!v.ok()) {
        r_.errors.push_back(path + ": getxattr " + x.name + ": " + v.status().ToString());
      } else if (*v != x.value) {
        r_.walker_errors.push_back(path + ": getxattr and listxattr disagree on " + x.name);
      }
    }
    if (!all.empty()) r_.xattrs[path] = all;
  }

  // A patch's sourced file (its content needs the lower state) is walked as
  // the bytes the image stores for it (a delta, or none) and its lower path.
  void ReadFile(const InodeInfo& in, const std::string& path) {
    std::string content;
    std::vector<uint8_t> buf(64u << 10);
    const bool sourced = in.is_sourced();
    const uint64_t size = in.stored_bytes();
    auto read = [&](uint64_t off) {
      return sourced ? img_.ReadStored(in.ino, off, buf) : img_.Read(in.ino, off, buf);
    };
    if (sourced) {
      if (auto p = img_.SourcePath(in.ino); !p.ok()) {
        r_.errors.push_back(path + ": lower path: " + p.status().ToString());
        r_.failed[path] = p.status().ToString();
        return;
      }
    }
    const uint64_t want = std::min(size, limits_.max_file_bytes);
    if (want < size) r_.truncated = true;
    for (uint64_t off = 0; off < want;) {
      if (total_ >= limits_.max_total_bytes) {
        r_.truncated = true;
        return;
      }
      auto n = read(off);
      if (!n.ok()) {
        r_.errors.push_back(path + ": read at " + std::to_string(off) + ": " +
                            n.status().ToString());
        r_.failed[path] = n.status().ToString();
        return;
      }
      if (*n == 0) {
        r_.walker_errors.push_back(path + ": read returned 0 before the end of the file");
        return;
      }
      const size_t take = static_cast<size_t>(std::min<uint64_t>(*n, want - off));
      content.append(reinterpret_cast<const char*>(buf.data()), take);
      off += *n;
      total_ += *n;
    }
    if (want < size) return;  // truncated: not a whole file
    auto eof = read(size);
    if (eof.ok() && *eof != 0) r_.walker_errors.push_back(path + ": data past the end of file");
    r_.files[path] = std::move(content);
  }

  const Image& img_;
  const Limits& limits_;
  Report& r_;
  uint64_t total_ = 0;
};

}  // namespace

Report Run(const std::string& image_path, const TrustStore& trust, const Limits& limits) {
  Report r;
  ImageOptions opts;
  opts.trust = &trust;
  opts.frame_cache_bytes = limits.frame_cache_bytes;
  opts.block_cache_bytes = limits.block_cache_bytes;
  auto img = Image::Open(image_path, opts);
  if (!img.ok()) {
    r.open = img.status();
    return r;
  }
  Walker(**img, limits, &r).Go();
  if (limits.verify_all && !r.truncated) {
    r.verify = (*img)->VerifyAll();
    r.verified = true;
  }
  return r;
}

std::vector<std::string> Differences(const Report& legit, const Report& hostile) {
  std::vector<std::string> out;
  for (const auto& [path, content] : hostile.files) {
    auto it = legit.files.find(path);
    if (it != legit.files.end() && it->second != content) {
      out.push_back("WRONG DATA: " + path + " (" + std::to_string(content.size()) +
                    " bytes, legit " + std::to_string(it->second.size()) + ")");
    }
  }
  for (const auto& [path, target] : hostile.links) {
    auto it = legit.links.find(path);
    if (it != legit.links.end() && it->second != target) {
      out.push_back("WRONG DATA: symlink " + path + " -> " + target);
    }
  }
  for (const auto& [path, xs] : hostile.xattrs) {
    auto it = legit.xattrs.find(path);
    if (it != legit.xattrs.end() && it->second != xs)
      out.push_back("WRONG DATA: xattrs of " + path);
  }
  return out;
}

}  // namespace cryptex::walk

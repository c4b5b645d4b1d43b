#include "cli.h"

#include <sys/stat.h>

#include <cstdio>
#include <cstdlib>

#include "format.h"
#include "terminal.h"

namespace cryptex::cli {

int Fail(const std::string& cmd, const Status& st) {
  // Messages name paths and image entries: escaped on a terminal (terminal.h).
  std::fprintf(stderr, "cryptex %s: %s\n", cmd.c_str(),
               ForTerminal(st.ToString(), StderrIsTerminal()).c_str());
  return ExitCodeFor(st);
}

int Usage(const std::string& cmd, const std::string& msg) {
  std::fprintf(stderr, "cryptex %s: %s (see cryptex %s --help)\n", cmd.c_str(), msg.c_str(),
               cmd.c_str());
  return kExitUsage;
}

Args::Args(int argc, char** argv, std::vector<std::string> with_value,
           std::vector<std::string> flags) {
  auto in = [](const std::vector<std::string>& v, const std::string& s) {
    for (const auto& x : v)
      if (x == s) return true;
    return false;
  };
  flags.push_back("--help");
  flags.push_back("-h");
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--") {
      for (++i; i < argc; ++i) pos_.push_back(argv[i]);
      break;
    }
    if (a.size() > 1 && a[0] == '-') {
      std::string name = a, value;
      bool has_eq = false;
      if (auto eq = a.find('='); a.rfind("--", 0) == 0 && eq != std::string::npos) {
        name = a.substr(0, eq);
        value = a.substr(eq + 1);
        has_eq = true;
      }
      if (in(flags, name) && !has_eq) {
        // A std::string, not the literal: assigning "1" makes GCC 12 at -O3
        // report a false -Wrestrict (GCC bug 105329).
        values_[name] = std::string("1");
      } else if (in(with_value, name)) {
        if (!has_eq) {
          if (i + 1 >= argc) {
            error_ = "option " + name + " needs a value";
            return;
          }
          value = argv[++i];
        }
        values_[name] = value;
        all_values_[name].push_back(value);
      } else {
        error_ = "unknown option " + a;
        return;
      }
    } else {
      pos_.push_back(a);
    }
  }
}

bool Args::Has(const std::string& name) const { return values_.count(name) > 0; }

std::optional<std::string> Args::Get(const std::string& name) const {
  auto it = values_.find(name);
  if (it == values_.end()) return std::nullopt;
  return it->second;
}

std::vector<std::string> Args::GetAll(const std::string& name) const {
  auto it = all_values_.find(name);
  if (it == all_values_.end()) return {};
  return it->second;
}

Result<TrustStore> LoadTrust(const Args& args) {
  CX_RETURN_IF_ERROR(CheckTrustSource(args.Has("--trust"), args.Has("--pubkey")));
  if (auto p = args.Get("--pubkey")) return TrustStore::LoadFile(*p);
  return TrustStore::LoadDir(args.Get("--trust").value_or(kDefaultTrustDir));
}

namespace {

// The trust store of `args` for opening `path`. Without a trusted key the
// image cannot be authenticated: it is refused like a badly signed one
// (exit 3), naming what is missing; both --trust and --pubkey is a usage
// error (exit 2), not a failed signature check.
Result<TrustStore> TrustFor(const std::string& path, const Args& args) {
  CX_RETURN_IF_ERROR(CheckTrustSource(args.Has("--trust"), args.Has("--pubkey")));
  auto trust_or = LoadTrust(args);
  if (!trust_or.ok()) {
    return Status::Signature(path + ": cannot check the signature: " + trust_or.status().message());
  }
  return trust_or;
}

}  // namespace

Result<std::unique_ptr<Image>> OpenImage(const std::string& path, const Args& args) {
  // The trust store must outlive the image only during Open (keys are used
  // for the signature check only), so a local is enough.
  CX_ASSIGN_OR_RETURN(TrustStore trust, TrustFor(path, args));
  ImageOptions opts;
  opts.trust = &trust;
  return Image::Open(path, opts);
}

Result<std::unique_ptr<View>> OpenView(const std::string& image,
                                       const std::vector<std::string>& patches, const Args& args,
                                       const std::string& option) {
  // As in OpenImage, keys are used while the images are opened only.
  CX_ASSIGN_OR_RETURN(TrustStore trust, TrustFor(image, args));
  ImageOptions opts;
  opts.trust = &trust;
  for (const auto& p : patches) {
    auto patch = Image::Open(p, opts);
    if (!patch.ok()) return patch.status().Prefixed(option);
    if ((*patch)->superblock().kind != format::kKindPatch) {
      return Status::InvalidArgument(option + " " + p +
                                     ": is a base image, not a patch (give it as IMAGE)");
    }
  }
  return OpenStack(image, patches, opts);
}

std::string HumanBytes(uint64_t n) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(n);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", v, units[u]);
  return buf;
}

}  // namespace cryptex::cli

namespace cryptex::cli {

std::string ModeString(uint32_t mode) {
  std::string s = "?---------";
  switch (mode & S_IFMT) {
    case S_IFREG:
      s[0] = '-';
      break;
    case S_IFDIR:
      s[0] = 'd';
      break;
    case S_IFLNK:
      s[0] = 'l';
      break;
    case S_IFCHR:
      s[0] = 'c';
      break;
    case S_IFBLK:
      s[0] = 'b';
      break;
    case S_IFIFO:
      s[0] = 'p';
      break;
    case S_IFSOCK:
      s[0] = 's';
      break;
  }
  const char* rwx = "rwxrwxrwx";
  for (int i = 0; i < 9; ++i)
    if (mode & (1u << (8 - i))) s[1 + i] = rwx[i];
  if (mode & S_ISUID) s[3] = (mode & S_IXUSR) ? 's' : 'S';
  if (mode & S_ISGID) s[6] = (mode & S_IXGRP) ? 's' : 'S';
  if (mode & S_ISVTX) s[9] = (mode & S_IXOTH) ? 't' : 'T';
  return s;
}

}  // namespace cryptex::cli

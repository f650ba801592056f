# refreshd: build, install and uninstall.
#   make                      release build
#   make install              PREFIX=/usr (default) DESTDIR= (staging root), SYSCONFDIR=/etc
#   make uninstall            removes what install put in place; keeps the ledger, spool and config
#   make uninstall PURGE=1    also removes /var/lib/refreshd, /var/spool/refreshd and /etc/refreshd
#   make verify               systemd-analyze verify + security (offline) on a staged install
#   make man                  manual pages: refreshd(8), refreshctl(1) generated from the commands' help
#                             (argument-parser's generate-manual plugin) into .build/man
#   make deb                  .build/deb/refreshd_<version>_<arch>.deb (scripts/make-deb; DEB_VERSION= overrides)
PREFIX ?= /usr
DESTDIR ?=
SYSCONFDIR ?= /etc
BINDIR = $(PREFIX)/bin
UNITDIR ?= $(PREFIX)/lib/systemd/system
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
TMPFILESDIR ?= $(PREFIX)/lib/tmpfiles.d
DOCDIR = $(PREFIX)/share/doc/refreshd
MANDIR = $(PREFIX)/share/man
BASHCOMPDIR = $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR = $(PREFIX)/share/zsh/vendor-completions
FISHCOMPDIR = $(PREFIX)/share/fish/vendor_completions.d
SWIFT ?= swift
# Where the binaries to install are (tests stage debug builds with BINARIES=.build/debug).
BINARIES ?= .build/release
# Generated manual pages (make man).
MANPAGES ?= .build/man
# Release binaries carry the Swift runtime and Foundation inside (--static-swift-stdlib): they run
# on a host without the Swift toolchain; glibc, libstdc++, zlib and libsqlite3 stay shared. Linked
# with -z now (full RELRO), as Debian hardens its packages.
RELEASE_FLAGS ?= -c release --static-swift-stdlib -Xlinker -z -Xlinker now

.PHONY: all build man install install-files install-man uninstall verify deb

all: build

build:
	$(SWIFT) build $(RELEASE_FLAGS) --product refreshd
	$(SWIFT) build $(RELEASE_FLAGS) --product refreshctl

# The plugin builds the executables in debug (the help texts are the same in every configuration)
# and writes one page per tool; refreshd's belongs in section 8. Blank lines in the help texts
# become paragraph breaks (mdoc warns about empty lines).
man:
	$(SWIFT) package plugin generate-manual --configuration debug --date $$(scripts/release-date) \
		--authors "refreshd developers"
	rm -rf $(MANPAGES) && mkdir -p $(MANPAGES)
	sed 's/^$$/.Pp/' .build/plugins/GenerateManual/outputs/refreshctl/refreshctl.1 > $(MANPAGES)/refreshctl.1
	sed 's/^$$/.Pp/; s/^\.Dt REFRESHD 1$$/.Dt REFRESHD 8/' .build/plugins/GenerateManual/outputs/refreshd/refreshd.1 > $(MANPAGES)/refreshd.8

install: build man install-files install-man

install-files:
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSUSERSDIR) $(DESTDIR)$(TMPFILESDIR) $(DESTDIR)$(DOCDIR)
	install -m 0755 $(BINARIES)/refreshd $(BINARIES)/refreshctl $(DESTDIR)$(BINDIR)/
	sed 's|/usr/bin/refreshd|$(BINDIR)/refreshd|; s|/etc/refreshd|$(SYSCONFDIR)/refreshd|g; s|/usr/share/doc|$(PREFIX)/share/doc|' \
		systemd/refreshd.service > $(DESTDIR)$(UNITDIR)/refreshd.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/refreshd.service
	install -m 0644 systemd/refreshd.sysusers $(DESTDIR)$(SYSUSERSDIR)/refreshd.conf
	sed 's|/etc/refreshd|$(SYSCONFDIR)/refreshd|g' systemd/refreshd.tmpfiles > $(DESTDIR)$(TMPFILESDIR)/refreshd.conf
	chmod 0644 $(DESTDIR)$(TMPFILESDIR)/refreshd.conf
	install -m 0644 README.md CHANGELOG.md docs/dispatcher.md docs/hardening.md docs/openapi.json $(DESTDIR)$(DOCDIR)/
	install -d $(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(ZSHCOMPDIR) $(DESTDIR)$(FISHCOMPDIR)
	install -m 0644 docs/man/refreshd.toml.5 docs/man/refreshd-spool.5 $(DESTDIR)$(MANDIR)/man5/
	# Shell completions, written by the binaries themselves (argument-parser); bash sources its
	# files, so no #! line.
	$(BINARIES)/refreshctl --generate-completion-script bash | sed '1{/^#!/d}' > $(DESTDIR)$(BASHCOMPDIR)/refreshctl
	$(BINARIES)/refreshd --generate-completion-script bash | sed '1{/^#!/d}' > $(DESTDIR)$(BASHCOMPDIR)/refreshd
	$(BINARIES)/refreshctl --generate-completion-script zsh > $(DESTDIR)$(ZSHCOMPDIR)/_refreshctl
	$(BINARIES)/refreshd --generate-completion-script zsh > $(DESTDIR)$(ZSHCOMPDIR)/_refreshd
	$(BINARIES)/refreshctl --generate-completion-script fish > $(DESTDIR)$(FISHCOMPDIR)/refreshctl.fish
	$(BINARIES)/refreshd --generate-completion-script fish > $(DESTDIR)$(FISHCOMPDIR)/refreshd.fish
	chmod 0644 $(DESTDIR)$(BASHCOMPDIR)/refreshctl $(DESTDIR)$(BASHCOMPDIR)/refreshd $(DESTDIR)$(ZSHCOMPDIR)/_refreshctl \
		$(DESTDIR)$(ZSHCOMPDIR)/_refreshd $(DESTDIR)$(FISHCOMPDIR)/refreshctl.fish $(DESTDIR)$(FISHCOMPDIR)/refreshd.fish
	$(BINARIES)/refreshd --help > $(DESTDIR)$(DOCDIR)/refreshd.txt
	$(BINARIES)/refreshctl --help > $(DESTDIR)$(DOCDIR)/refreshctl.txt
	install -d -m 0750 $(DESTDIR)$(SYSCONFDIR)/refreshd
	# The example configuration never overwrites one in place.
	test -e $(DESTDIR)$(SYSCONFDIR)/refreshd/refreshd.toml || install -m 0640 config/refreshd.toml $(DESTDIR)$(SYSCONFDIR)/refreshd/refreshd.toml
	@if [ -z "$(DESTDIR)" ] && command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then \
		systemd-sysusers $(SYSUSERSDIR)/refreshd.conf && systemd-tmpfiles --create $(TMPFILESDIR)/refreshd.conf && \
		chgrp refreshd $(SYSCONFDIR)/refreshd $(SYSCONFDIR)/refreshd/refreshd.toml && systemctl daemon-reload; \
		echo "installed; next: put the API key in $(SYSCONFDIR)/refreshd/sendgrid-api-key (0640 root:refreshd), then systemctl enable --now refreshd"; \
	fi

install-man:
	install -d $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man8
	install -m 0644 $(MANPAGES)/refreshctl.1 $(DESTDIR)$(MANDIR)/man1/
	install -m 0644 $(MANPAGES)/refreshd.8 $(DESTDIR)$(MANDIR)/man8/

deb: build man
	scripts/make-deb

uninstall:
	-@if [ -z "$(DESTDIR)" ] && command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then systemctl disable --now refreshd 2>/dev/null; fi
	rm -f $(DESTDIR)$(BINDIR)/refreshd $(DESTDIR)$(BINDIR)/refreshctl $(DESTDIR)$(UNITDIR)/refreshd.service \
		$(DESTDIR)$(SYSUSERSDIR)/refreshd.conf $(DESTDIR)$(TMPFILESDIR)/refreshd.conf \
		$(DESTDIR)$(MANDIR)/man1/refreshctl.1 $(DESTDIR)$(MANDIR)/man8/refreshd.8 $(DESTDIR)$(MANDIR)/man5/refreshd.toml.5 \
		$(DESTDIR)$(MANDIR)/man5/refreshd-spool.5 $(DESTDIR)$(BASHCOMPDIR)/refreshctl $(DESTDIR)$(BASHCOMPDIR)/refreshd \
		$(DESTDIR)$(ZSHCOMPDIR)/_refreshctl $(DESTDIR)$(ZSHCOMPDIR)/_refreshd $(DESTDIR)$(FISHCOMPDIR)/refreshctl.fish \
		$(DESTDIR)$(FISHCOMPDIR)/refreshd.fish
	rm -rf $(DESTDIR)$(DOCDIR)
	@if [ -n "$(PURGE)" ]; then rm -rf $(DESTDIR)/var/lib/refreshd $(DESTDIR)/var/spool/refreshd $(DESTDIR)$(SYSCONFDIR)/refreshd; \
		echo "purged the ledger, the spool and the configuration"; \
	else echo "kept the ledger (/var/lib/refreshd), the spool and $(SYSCONFDIR)/refreshd (make uninstall PURGE=1 removes them)"; fi

verify: build
	rm -rf .build/stage && $(MAKE) --no-print-directory install DESTDIR=$(CURDIR)/.build/stage
	# Verified against the host's systemd, with ExecStart pointing at the staged binary.
	mkdir -p .build/verify
	sed 's|^ExecStart=$(BINDIR)/refreshd|ExecStart=$(CURDIR)/.build/stage$(BINDIR)/refreshd|' \
		.build/stage$(UNITDIR)/refreshd.service > .build/verify/refreshd.service
	# Its Documentation= pages are looked up in the staged install.
	MANPATH=$(CURDIR)/.build/stage$(MANDIR) systemd-analyze verify .build/verify/refreshd.service
	systemd-analyze security --offline=yes --threshold=20 .build/verify/refreshd.service
